# sipcast: the README's two commands are `make run` and `make test`. Both install what is missing first.
CARGO ?= cargo
CONFIG ?= config/sipcast.toml

.PHONY: run test deps deps-test deps-bench build build-release lint check-templates clean fuzz bench

## Install build and runtime dependencies (GStreamer 1.22) if missing.
deps:
	scripts/install-deps.sh run

## Install the above plus the test peers (baresip, kamailio, nginx-rtmp, ffmpeg) if missing.
deps-test:
	scripts/install-deps.sh test

build-release: deps
	$(CARGO) build --release --locked --bin sipcast

## Build and start the gateway with config/sipcast.toml (REST on 127.0.0.1:8081).
run: build-release
	./target/release/sipcast --config $(CONFIG)

## Formatting, lints, unit tests, and the integration scenarios against real peers.
test: deps-test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) test --locked --workspace --no-fail-fast

## Install the above plus matplotlib (plot) and perf (profiles) for the capacity benchmark.
deps-bench:
	scripts/install-deps.sh bench

## Capacity benchmark (issue 7, work in progress): sipcast vs one ffmpeg per call, N rising until a limit;
## writes bench/RESULTS.md, bench/results.json and bench/capacity.png. Settings: BENCH_* (bench/README.md).
bench: deps-bench
	$(CARGO) build --release --locked -p sipcast -p loadgen --bins
	ulimit -n 65536 2>/dev/null || true; /usr/bin/python3 bench/run.py

## Fuzz the SIP and SDP parsers (cargo fuzz on stable via RUSTC_BOOTSTRAP), FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 600
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check-templates: build-release
	./target/release/sipcast --config $(CONFIG) --check

clean:
	$(CARGO) clean
