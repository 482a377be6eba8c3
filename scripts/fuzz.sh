#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets) for SECONDS (default 600), seeded with the shared torture
# messages, captured flows and real-product SDP. Works on the stable toolchain: cargo-fuzz passes -Z flags,
# which RUSTC_BOOTSTRAP=1 allows; no sanitizer is needed for code that forbids unsafe (-s none).
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
testdata="../shared/testdata"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/sip_message fuzz/corpus/sdp
# Same dependency versions as the gateway itself (cargo adds the fuzzing crates).
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
if [ -d "$testdata" ]; then
  find "$testdata/rfc4475" "$testdata/rfc5118/wire" "$testdata/flows" -type f \( -name '*.dat' -o -name '*.sip' \) \
    | while read -r f; do cp "$f" "fuzz/corpus/sip_message/seed-$(sha1sum "$f" | cut -c1-16)"; done
  cp "$testdata"/sdp/*.sdp fuzz/corpus/sdp/
fi
export RUSTC_BOOTSTRAP=1
for target in sip_message sdp; do
  echo "fuzz: $target for ${seconds}s"
  (cd fuzz && cargo fuzz run -s none "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1)
done
echo "fuzz: no crash in ${seconds}s per target"
