#!/usr/bin/env bash
# What the DNS answer-time histogram costs the UDP fast path: saturated qps
# (closed loop, bench/tools dnsblast, 200 in flight) of this checkout and of
# a base commit built the same way, alternating, ROUNDS rounds; medians and
# the ratio. Server pinned to CPU 0, generator to CPU 1. Loopback only.
#
# usage: bench/histogram-cost.sh BASE_COMMIT [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. script/lib.sh
need_build_deps
BASE=${1:?usage: bench/histogram-cost.sh BASE_COMMIT [ROUNDS] [SECONDS]}
ROUNDS=${2:-5}
SECS=${3:-5}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; git worktree remove --force "$W/base" 2>/dev/null || true; rm -rf "$W"' EXIT
python3 bench/gen.py "$W" 10000 200000
cargo build --release --locked -q
cp target/release/vdh-edge "$W/new"
ROOT=$(pwd)
git worktree add -q "$W/base" "$BASE"
# The same target folder: only the changed crates build again.
(cd "$W/base" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q)
cp target/release/vdh-edge "$W/base-bin"
cargo build --release --locked -q   # leave this checkout's binary in place
(cd bench/tools && cargo build --release -q)
T=bench/tools/target/release
PORT=15413
run() {
    taskset -c 0 "$1" --log warn serve --zones "$W/zones" --state deploy/state.yaml --dns 127.0.0.1:$PORT \
        --http 127.0.0.1:0 --admin 127.0.0.1:0 & local pid=$!
    for _ in $(seq 100); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p $PORT vdh-api.yingzi.com A 2>/dev/null | grep -q . && break
        sleep 0.1
    done
    taskset -c 1 $T/dnsblast --server 127.0.0.1:$PORT --queries "$W/queries.txt" --seconds "$SECS" --inflight 200 \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["qps"])'
    kill $pid; wait $pid 2>/dev/null || true
}
declare -a NEW BASEQ
for r in $(seq 1 "$ROUNDS"); do
    NEW+=("$(run "$W/new")")
    BASEQ+=("$(run "$W/base-bin")")
    echo "round $r: this ${NEW[-1]} qps, base ${BASEQ[-1]} qps" >&2
done
python3 - "${NEW[*]}" "${BASEQ[*]}" <<'PY'
import statistics, sys
new = [float(x) for x in sys.argv[1].split()]
base = [float(x) for x in sys.argv[2].split()]
mn, mb = statistics.median(new), statistics.median(base)
print(f"this checkout: median {mn:.0f} qps ({min(new):.0f}-{max(new):.0f}); base: median {mb:.0f} qps ({min(base):.0f}-{max(base):.0f}); ratio {mn/mb:.3f}")
PY
