# Builds the managed plugin's rootfs inside Docker, for machines without a Swift toolchain:
#
#   plugin/build-in-docker <registry>/do_storage:latest
#
# which runs `docker build --target rootfs`, exports the result to plugin/rootfs and creates the plugin. The build
# stage runs the same plugin/build as a build on the host; the rootfs stage holds only what the plugin needs.
ARG SWIFT_IMAGE=swift:6.3-bookworm

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libcurl4-openssl-dev libudev-dev libblkid-dev pkgconf binutils ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift config.json ./
COPY Sources Sources
COPY Tests Tests
COPY Benchmarks Benchmarks
COPY plugin/build plugin/symbol-order.txt plugin/text-layout.ld plugin/
RUN plugin/build

FROM scratch AS rootfs
COPY --from=build /src/plugin/rootfs/ /
