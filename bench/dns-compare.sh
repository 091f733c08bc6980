#!/usr/bin/env bash
# Compares DNS throughput of vdh-edge and NSD on the same 10k-record zone and
# query mix, measured in one run with dnsperf. Each server is pinned to CPU 0,
# dnsperf to CPU 1. Loopback only; every run stops by itself.
#
# usage: bench/dns-compare.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. script/lib.sh
need_pkgs nsd:nsd dnsperf:dnsperf
SECS=${1:-10}
ROUNDS=${2:-1}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
python3 bench/gen.py "$W" 10000 200000
cargo build --release --locked -q
BIN=target/release/vdh-edge
echo '{}' > "$W/empty.yaml"
cp deploy/state.yaml "$W/state.yaml"

cat > "$W/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1@15354
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$W/static"
    database: ""
    pidfile: "$W/nsd.pid"
    xfrdfile: "$W/xfrd.state"
    zonelistfile: "$W/zone.list"
    logfile: "$W/nsd.log"
    rrl-ratelimit: 0
    verbosity: 0
remote-control:
    control-enable: no
zone:
    name: yingzi.com
    zonefile: yingzi.com.zone
CONF

run_dnsperf() { # PORT LABEL
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$1" -d "$W/queries.txt" -l "$SECS" -c 8 -q 500 -S 0 2>/dev/null \
        | awk -v l="$2" '/Queries per second/ {printf "%s %s\n", l, $4} /Queries lost/ {lost=$3} END {}'
}

for r in $(seq 1 "$ROUNDS"); do
    taskset -c 0 /usr/sbin/nsd -d -c "$W/nsd.conf" & NSD=$!
    sleep 1
    run_dnsperf 15354 nsd | tee -a "$W/results"
    kill $NSD 2>/dev/null || true; wait $NSD 2>/dev/null || true

    taskset -c 0 $BIN --log warn serve --zones "$W/zones" --state "$W/state.yaml" --dns 127.0.0.1:15355 --http 127.0.0.1:0 & EDGE=$!
    sleep 1
    run_dnsperf 15355 vdh-edge | tee -a "$W/results"
    kill $EDGE 2>/dev/null || true; wait $EDGE 2>/dev/null || true
done
awk '{s[$1]=s[$1]" "$2} END {for (k in s) print k": qps" s[k]}' "$W/results"
awk '$1=="nsd"{n+=$2;c++} $1=="vdh-edge"{e+=$2;d++} END {if (c&&d) printf "ratio vdh-edge/nsd (mean): %.2f\n", (e/d)/(n/c)}' "$W/results"
