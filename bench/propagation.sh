#!/usr/bin/env bash
# Propagation under load: the time from an etcd put being acknowledged to
# every edge answering the new value (bench/tools/src/bin/propagation.rs),
# with EDGES edges (--udp-workers 1) first idle, then each under QPS
# queries per second of DNS (one paced dnsblast per edge). One etcd member,
# the shipped state and zones. Prints p50/p99/max per run and, for the
# loaded run, the queries each edge left unanswered. Loopback only; stops
# by itself.
#
# usage: bench/propagation.sh [EDGES] [QPS] [CHANGES]   (default 10 20000 200)
set -euo pipefail
cd "$(dirname "$0")/.."
. script/lib.sh
need_build_deps
need_pkgs etcd:etcd-server etcdctl:etcd-client dig:dnsutils
EDGES=${1:-10}
QPS=${2:-20000}
CHANGES=${3:-200}
INTERVAL_MS=100
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
cargo build --release --locked -q
(cd bench/tools && cargo build --release -q)
BIN=target/release/vdh-edge
T=bench/tools/target/release
E=http://127.0.0.1:12379
etcd --name p1 --data-dir "$W/etcd" --listen-client-urls $E --advertise-client-urls $E \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster p1=http://127.0.0.1:12380 --log-level error > "$W/etcd.log" 2>&1 &
until ETCDCTL_API=3 etcdctl --endpoints $E endpoint health > /dev/null 2>&1; do sleep 0.1; done
$BIN apply deploy/state.yaml --etcd $E --yes > /dev/null 2>&1
# prod's value with its addresses replaced by the placeholder.
ETCDCTL_API=3 etcdctl --endpoints $E get --print-value-only /vdh-edge/environments/prod \
    | python3 -c 'import json, sys; v = json.load(sys.stdin); v["addresses"] = ["@ADDR@"]; print(json.dumps(v))' > "$W/template"
printf 'vdh-api.yingzi.com A\nvdh-api-prod.yingzi.com A\nwww.yingzi.com A\nmail.yingzi.com MX\nyingzi.com SOA\n' > "$W/queries.txt"
ADDRS=()
for i in $(seq 1 "$EDGES"); do
    port=$((16100 + i))
    $BIN --log warn serve --etcd $E --zones zones --dns 127.0.0.1:$port --http 127.0.0.1:0 --admin 127.0.0.1:0 \
        --udp-workers 1 --edge-id "p$i" 2> "$W/edge$i.log" &
    ADDRS+=("127.0.0.1:$port")
done
for a in "${ADDRS[@]}"; do
    until [ -n "$(dig +short +time=1 +tries=1 @127.0.0.1 -p "${a#*:}" vdh-api-prod.yingzi.com 2>/dev/null)" ]; do sleep 0.1; done
done
EDGE_LIST=$(IFS=,; echo "${ADDRS[*]}")
measure() { # LABEL
    $T/propagation --etcd 127.0.0.1:12379 --key /vdh-edge/environments/prod --template "$W/template" \
        --edges "$EDGE_LIST" --name vdh-api-prod.yingzi.com --changes "$CHANGES" --interval-ms $INTERVAL_MS > "$W/prop.json"
    python3 - "$1" "$W/prop.json" <<'PY2'
import json, sys
r = json.load(open(sys.argv[2]))
print(f"{sys.argv[1]:<28} changes {r['measured']}/{r['changes']} (timeouts {r['timeouts']})"
      f"  p50 {r['p50_us'] / 1000:.2f} ms  p99 {r['p99_us'] / 1000:.2f} ms  max {r['max_us'] / 1000:.2f} ms")
PY2
}
echo "propagation: $EDGES edges, etcd put acknowledged -> every edge answering over DNS"
measure "idle"
SECS=$(( CHANGES * (INTERVAL_MS + 20) / 1000 + 6 ))
BLASTS=()
for i in $(seq 1 "$EDGES"); do
    $T/dnsblast --server "${ADDRS[$((i - 1))]}" --queries "$W/queries.txt" --seconds "$SECS" --rate "$QPS" > "$W/blast$i.json" &
    BLASTS+=($!)
done
sleep 2
measure "under $QPS qps per edge"
wait "${BLASTS[@]}"
python3 - "$W" "$EDGES" <<'PY'
import json, sys
w, n = sys.argv[1], int(sys.argv[2])
rows = [json.load(open(f"{w}/blast{i}.json")) for i in range(1, n + 1)]
print("load: answered qps per edge " + " ".join(f"{r['qps']:.0f}" for r in rows))
print("      unanswered per edge  " + " ".join(str(r["lost"]) for r in rows))
PY
