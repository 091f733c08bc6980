#!/usr/bin/env bash
# DNS speed: NSD, Knot DNS, vdh-edge and a trivial pre-encoded responder on
# the same 10,000-record zone and query mix (60% vdh-api.yingzi.com A, 20%
# existing A, 10% AAAA/TXT, 10% NXDOMAIN). Each server is pinned to CPU 0,
# the load generator to CPU 1; servers alternate; ROUNDS rounds; medians and
# spread. Loopback only; every run stops by itself.
#
# For each server:
#   qps   — saturation, closed loop (bench/tools dnsblast: sendmmsg/recvmmsg,
#           200 queries in flight)
#   cpu   — server CPU time per query at a fixed 40,000 qps, the queries
#           evenly spaced (dnsblast --rate sends each when due, whatever
#           the answers do: one wake-up per query for every server): the run time
#           the scheduler clock records for every thread of the server and
#           its child processes (/proc/PID/task/*/schedstat, nanoseconds),
#           not sampled ticks. (This VM's cpuidle POLL state keeps no
#           residency time, so core 0's idle clock under-counts idle.)
#   p50/p99 — latency at that fixed rate
# plus vdh-edge with ECS from 4,096 /24s on the service name (answers that
# depend on the client network cannot be memoised), and dnsperf's figure.
#
# usage: bench/dns-compare.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. script/lib.sh
need_build_deps
need_pkgs nsd:nsd knotd:knot dnsperf:dnsperf
ROUNDS=${1:-5}
SECS=${2:-8}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
python3 bench/gen.py "$W" 10000 200000
cargo build --release --locked -q
(cd bench/tools && cargo build --release -q)
BIN=target/release/vdh-edge
T=bench/tools/target/release
P_NSD=15401 P_KNOT=15402 P_EDGE=15403 P_TRIV=15404

cat > "$W/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1@$P_NSD
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
mkdir -p "$W/knot"
cat > "$W/knot.conf" <<CONF
server:
    rundir: "$W/knot"
    listen: 127.0.0.1@$P_KNOT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$W/knot"
log:
  - target: stderr
    any: error
template:
  - id: default
    storage: "$W/static"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: yingzi.com.
CONF

# cpu_ns (script/lib.sh): scheduler run time of a server and its children.

# measure LABEL PORT PID [EXTRA dnsblast args]: prints "LABEL qps cpu_us p50 p99 lost"
measure() {
    local label=$1 port=$2 pid=$3; shift 3
    local sat fixed c0 c1
    sat=$(taskset -c 1 $T/dnsblast --server 127.0.0.1:$port --queries "$W/queries.txt" --seconds "$SECS" --inflight 200 "$@")
    sleep 0.5
    c0=$(cpu_ns "$pid")
    fixed=$(taskset -c 1 $T/dnsblast --server 127.0.0.1:$port --queries "$W/queries.txt" --seconds "$SECS" --rate 40000 "$@")
    c1=$(cpu_ns "$pid")
    python3 - "$label" "$sat" "$fixed" "$c0" "$c1" <<'PY'
import json, sys
label, sat, fixed = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
c0, c1 = map(int, sys.argv[4:6])
cpu = (c1 - c0) / 1000 / max(fixed["answered"], 1)
print(f"{label} {sat['qps']} {cpu:.2f} {fixed['p50_us']} {fixed['p99_us']} {fixed['lost']}")
PY
}

wait_port() {
    for _ in $(seq 100); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p "$1" vdh-api.yingzi.com A 2>/dev/null | grep -q '^192\.0\.2\.' && return 0
        sleep 0.1
    done
    echo "server on $1 did not start" >&2
    exit 1
}

for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r" >&2
    taskset -c 0 /usr/sbin/nsd -d -c "$W/nsd.conf" & PID=$!; wait_port $P_NSD
    measure nsd $P_NSD $PID | tee -a "$W/results"; kill $PID; wait $PID 2>/dev/null || true

    taskset -c 0 knotd -c "$W/knot.conf" 2>/dev/null & PID=$!; wait_port $P_KNOT
    measure knot $P_KNOT $PID | tee -a "$W/results"; kill $PID; wait $PID 2>/dev/null || true

    taskset -c 0 $BIN --log warn serve --zones "$W/zones" --state deploy/state.yaml --dns 127.0.0.1:$P_EDGE --http 127.0.0.1:0 --admin 127.0.0.1:0 & PID=$!; wait_port $P_EDGE
    measure vdh-edge $P_EDGE $PID | tee -a "$W/results"
    measure vdh-edge-ecs $P_EDGE $PID --ecs | tee -a "$W/results"
    taskset -c 0 $T/trivial-responder --listen 127.0.0.1:$P_TRIV --learn-from 127.0.0.1:$P_EDGE --queries "$W/queries.txt" 2>"$W/trivial.log" & TPID=$!
    wait_port $P_TRIV
    kill $PID; wait $PID 2>/dev/null || true
    measure trivial $P_TRIV $TPID | tee -a "$W/results"; cat "$W/trivial.log" >&2; kill $TPID; wait $TPID 2>/dev/null || true
done

# dnsperf, once each (it saturates its own core first; a lower bound).
for s in nsd edge; do
    if [ $s = nsd ]; then taskset -c 0 /usr/sbin/nsd -d -c "$W/nsd.conf" & PID=$!; PORT=$P_NSD
    else taskset -c 0 $BIN --log warn serve --zones "$W/zones" --state deploy/state.yaml --dns 127.0.0.1:$P_EDGE --http 127.0.0.1:0 --admin 127.0.0.1:0 & PID=$!; PORT=$P_EDGE; fi
    wait_port $PORT
    q=$(taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$W/queries.txt" -l "$SECS" -c 8 -q 500 2>/dev/null | awk '/Queries per second/ {print $4}')
    echo "dnsperf-$s $q" | tee -a "$W/results"
    kill $PID; wait $PID 2>/dev/null || true
done

python3 - "$W/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault(f[0], []).append([float(x) for x in f[1:]])
def med(k, i): return statistics.median(r[i] for r in rows[k])
def spread(k, i): v = [r[i] for r in rows[k]]; return f"{min(v):.0f}-{max(v):.0f}" if i == 0 else f"{min(v):.2f}-{max(v):.2f}"
print()
print(f"{'server':<14}{'qps (median)':>14}{'spread':>18}{'cpu us/q @40k':>15}{'spread':>12}{'p50 us':>8}{'p99 us':>8}")
for k in ["nsd", "knot", "vdh-edge", "vdh-edge-ecs", "trivial"]:
    if k in rows:
        print(f"{k:<14}{med(k,0):>14.0f}{spread(k,0):>18}{med(k,1):>15.2f}{spread(k,1):>12}{med(k,2):>8.0f}{med(k,3):>8.0f}")
n, e, t = med("nsd", 0), med("vdh-edge", 0), med("trivial", 0)
print()
print(f"vdh-edge / NSD qps:        {e/n:.2f}  (target >= 1.10)")
print(f"vdh-edge / trivial qps:    {e/t:.2f}  (target >= 0.90)")
print(f"vdh-edge / NSD cpu/query:  {med('vdh-edge',1)/med('nsd',1):.2f}  (target <= 0.85)")
print(f"vdh-edge / NSD p99 @40k:   {med('vdh-edge',3)/med('nsd',3):.2f}  (target <= 1.00)")
print(f"knot / NSD qps:            {med('knot',0)/n:.2f}")
for k in ("dnsperf-nsd", "dnsperf-edge"):
    if k in rows: print(f"{k}: {rows[k][0][0]:.0f} qps")
PY
