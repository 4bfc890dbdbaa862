# do_storage: the first two targets are the README's quick start.
.PHONY: demo test bench torture build

demo:
	scripts/demo

test:
	scripts/test

bench:
	scripts/bench

# The torture run alone, 10 minutes (TORTURE_SECONDS to change it); make test runs it for 2.
torture:
	scripts/torture

# The plain-process binary: Swift runtime linked in, so it needs only the Debian libraries (libcurl4, libudev1,
# libblkid1) on the host.
build:
	swift build -c release --product do-storage --static-swift-stdlib
