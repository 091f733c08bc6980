#!/usr/bin/env bash
# Long fuzzing runs of the structure-aware targets in src/fuzz.rs (proptest
# on stable Rust): each target runs MINUTES minutes with fresh seeds, one
# after the other (one core each; optimized build), and prints its case
# count. A failure stops the run and leaves the smallest failing input in
# target/fuzz-failures/<target>: turn it into a regression case in
# tests/fixtures/fuzz/ (replayed by fuzz::regressions_stay_fixed).
#
# usage: bench/fuzz.sh [MINUTES] [TARGET...]
#   targets: dns_raw_bytes dns_queries_with_edns_and_ecs zone_files
#            state_documents_in_yaml state_as_etcd_json_values
#            http_query_strings_and_forwarding_headers
set -euo pipefail
cd "$(dirname "$0")/.."
. script/lib.sh
need_build_deps
MINUTES=${1:-10}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(dns_raw_bytes dns_queries_with_edns_and_ecs zone_files state_documents_in_yaml
             state_as_etcd_json_values http_query_strings_and_forwarding_headers)
fi
# The release profile with debug assertions and overflow checks, as a
# fuzzer wants.
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
# Its own target folder: these flags would rebuild the normal release
# binary, and a long run must not hold the main folder's build lock.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/fuzz-build}
cargo test --release --locked --lib --no-run -q
for t in "${TARGETS[@]}"; do
    start=$(date +%s)
    out=$(VDH_FUZZ_SECONDS=$((MINUTES * 60)) cargo test --release --locked --lib -q "fuzz::$t" -- --exact --nocapture 2>&1) \
        || { echo "$out" | tail -20; echo "fuzz $t FAILED (see target/fuzz-failures/)"; exit 1; }
    echo "$(echo "$out" | grep -a '^fuzz ') in $(( $(date +%s) - start )) s"
done
