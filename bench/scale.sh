#!/usr/bin/env bash
# Scale: vdh-edge with a zone of 1k, 100k and 1M hosts (about 1.2 records
# per host) beside the shipped yingzi.com zone. For each size: load time
# (start to first snapshot live) next to Knot's for the same zone, resident
# memory, saturation qps (dnsblast, CPU 1; server on CPU 0), and the time a
# state-only change takes from the file write to the new DNS answer while
# 20,000 qps run, with the count of queries not answered. Loopback only.
#
# usage: bench/scale.sh [SIZES...]   (default: 1000 100000 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
. script/lib.sh
need_build_deps
need_pkgs knotd:knot dig:dnsutils
SIZES=${*:-1000 100000 1000000}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
cargo build --release --locked -q
(cd bench/tools && cargo build --release -q)
BIN=target/release/vdh-edge
T=bench/tools/target/release
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
printf "%-9s %9s %9s %9s %10s %9s %8s\n" records load_ms knot_ms rss_mib qps swap_ms unanswered
for N in $SIZES; do
    D="$W/$N"; mkdir -p "$D"
    python3 bench/gen.py "$D" "$N" 50000 big.example
    cp zones/yingzi.com.zone "$D/zones/"
    cp deploy/state.yaml "$D/state.yaml"
    records=$(grep -c ' IN ' "$D/zones/big.example.zone")
    # Knot's load time for the same zone.
    mkdir -p "$D/knot"
    cat > "$D/knot.conf" <<CONF
server:
    rundir: "$D/knot"
    listen: 127.0.0.1@15601
database:
    storage: "$D/knot"
log:
  - target: stderr
    any: error
template:
  - id: default
    storage: "$D/zones"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: big.example.
CONF
    t=$(date +%s%N)
    taskset -c 0 knotd -c "$D/knot.conf" 2>/dev/null & K=$!
    until dig +time=1 +tries=1 @127.0.0.1 -p 15601 big.example SOA 2>/dev/null | grep -q 'status: NOERROR'; do sleep 0.02; done
    knot_ms=$(ms $t); kill $K; wait $K 2>/dev/null || true
    # vdh-edge.
    t=$(date +%s%N)
    taskset -c 0 $BIN --log info serve --zones "$D/zones" --state "$D/state.yaml" --dns 127.0.0.1:15600 --http 127.0.0.1:0 --admin 127.0.0.1:0 2>"$D/edge.log" & E=$!
    until grep -q "first snapshot live" "$D/edge.log"; do sleep 0.02; done
    load_ms=$(ms $t)
    sleep 6   # let the periodic malloc_trim run
    rss=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$E/status)
    qps=$(taskset -c 1 $T/dnsblast --server 127.0.0.1:15600 --queries "$D/queries.txt" --seconds 5 --inflight 200 | python3 -c 'import json,sys; print(json.load(sys.stdin)["qps"])')
    # A state-only change under load.
    taskset -c 1 $T/dnsblast --server 127.0.0.1:15600 --queries "$D/queries.txt" --seconds 6 --rate 20000 > "$D/blast.json" &
    B=$!
    sleep 1
    sed 's/addresses: \[192.0.2.10, 192.0.2.11\]/addresses: [192.0.2.12]/' "$D/state.yaml" > "$D/state.tmp"
    t=$(date +%s%N)
    mv "$D/state.tmp" "$D/state.yaml"
    until [ "$(dig +short +time=1 +tries=1 @127.0.0.1 -p 15600 vdh-api.yingzi.com)" = "192.0.2.12" ]; do sleep 0.005; done
    swap_ms=$(ms $t)
    wait $B
    lost=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["lost"])' "$D/blast.json")
    kill $E; wait $E 2>/dev/null || true
    printf "%-9s %9s %9s %9s %10s %9s %8s\n" "$records" "$load_ms" "$knot_ms" "$rss" "$qps" "$swap_ms" "$lost"
done
