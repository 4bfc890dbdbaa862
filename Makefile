# do_storage: the first two targets are the README's quick start.
.PHONY: demo test bench build

demo:
	scripts/demo

test:
	scripts/test

bench:
	scripts/bench

build:
	swift build -c release --product do-storage
