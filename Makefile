# The two commands the README promises on a fresh Debian 12 machine:
#   make demo   set up, build, analyse the bundled sample (assets/vtest.avi) into out/demo
#   make test   set up, build, pass the tests
.PHONY: setup build demo test bench lint

setup:
	bash scripts/setup.sh

build: setup
	cargo build --release

demo: build
	./target/release/edgesight run assets/vtest.avi --out out/demo

test: setup
	cargo test --release
	@if [ -f ../shared/fixtures/yolov8s-random-640-dynbatch.onnx ]; then \
		cargo test --release --test yolov8_fixture -- --ignored; \
	else echo "YOLOv8s fixture test ignored: ../shared/fixtures is absent"; fi

bench: build
	./target/release/edgesight bench --json out/bench/bench.json

lint:
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
