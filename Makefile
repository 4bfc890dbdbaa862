# do_storage: the first two targets are the README's quick start.
.PHONY: demo test bench build

demo:
	scripts/demo

test:
	scripts/test

bench:
	scripts/bench

# The plain-process binary: Swift runtime linked in, so it needs only the Debian libraries (libcurl4, libudev1,
# libblkid1) on the host.
build:
	swift build -c release --product do-storage --static-swift-stdlib
