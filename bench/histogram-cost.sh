#!/usr/bin/env bash
# What the DNS answer-time histogram costs the UDP fast path: saturated qps
# (closed loop, bench/tools dnsblast, 200 in flight) and server CPU time per
# query at a fixed 40,000 qps (scheduler clock, far less noisy than
# saturation on this VM) of this checkout and of a base commit built the
# same way, alternating, ROUNDS rounds; medians and the ratios. Server
# pinned to CPU 0, generator to CPU 1. Loopback only.
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
# run BINARY: prints "qps cpu_us_per_query"
run() {
    taskset -c 0 "$1" --log warn serve --zones "$W/zones" --state deploy/state.yaml --dns 127.0.0.1:$PORT \
        --http 127.0.0.1:0 --admin 127.0.0.1:0 & local pid=$!
    for _ in $(seq 100); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p $PORT vdh-api.yingzi.com A 2>/dev/null | grep -q . && break
        sleep 0.1
    done
    local sat fixed c0 c1
    sat=$(taskset -c 1 $T/dnsblast --server 127.0.0.1:$PORT --queries "$W/queries.txt" --seconds "$SECS" --inflight 200)
    sleep 0.5
    c0=$(cpu_ns "$pid")
    fixed=$(taskset -c 1 $T/dnsblast --server 127.0.0.1:$PORT --queries "$W/queries.txt" --seconds "$SECS" --rate 40000)
    c1=$(cpu_ns "$pid")
    kill $pid; wait $pid 2>/dev/null || true
    python3 -c 'import json,sys; s,f=json.loads(sys.argv[1]),json.loads(sys.argv[2]); print(s["qps"], round((int(sys.argv[4])-int(sys.argv[3]))/1000/max(f["answered"],1),3))' \
        "$sat" "$fixed" "$c0" "$c1"
}
declare -a NEW BASEQ
for r in $(seq 1 "$ROUNDS"); do
    NEW+=("$(run "$W/new")")
    BASEQ+=("$(run "$W/base-bin")")
    echo "round $r: this ${NEW[-1]}, base ${BASEQ[-1]} (qps, us/query at 40k)" >&2
done
python3 - "${NEW[*]}" "${BASEQ[*]}" <<'PY'
import statistics, sys
def cols(s):
    v = [float(x) for x in s.split()]
    return v[0::2], v[1::2]
(nq, nc), (bq, bc) = cols(sys.argv[1]), cols(sys.argv[2])
m = statistics.median
print(f"saturated: this checkout median {m(nq):.0f} qps ({min(nq):.0f}-{max(nq):.0f}); base median {m(bq):.0f} qps ({min(bq):.0f}-{max(bq):.0f}); ratio {m(nq)/m(bq):.3f}")
print(f"cpu/query at 40k qps: this checkout median {m(nc):.3f} us ({min(nc):.3f}-{max(nc):.3f}); base median {m(bc):.3f} us ({min(bc):.3f}-{max(bc):.3f}); ratio {m(nc)/m(bc):.3f}")
PY
