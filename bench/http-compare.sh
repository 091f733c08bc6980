#!/usr/bin/env bash
# HTTP speed: nginx (one worker, tuned as its users run it: keep-alive for
# 100,000 requests, open_file_cache, reuseport) serving one config
# document's bytes as a static file, a bare hyper server answering the same
# bytes from memory (bench/tools/src/bin/bare-hyper.rs: the limit of the HTTP
# stack vdh-edge is built on), and vdh-edge computing the document per
# request; wrk with one thread and 64 connections on CPU 1, each server on
# CPU 0; ROUNDS alternated rounds: medians and spread of requests per
# second, p99 and each server's CPU time per request. Then 10,000 concurrent long-polls on
# vdh-edge: its resident memory while holding them, and the time until all
# are answered after one state change. Loopback only; stops by itself.
#
# usage: bench/http-compare.sh [ROUNDS] [SECONDS] [LONGPOLLS]
set -euo pipefail
cd "$(dirname "$0")/.."
. script/lib.sh
need_build_deps
need_pkgs wrk:wrk nginx:nginx-light
ROUNDS=${1:-3}
SECS=${2:-8}
POLLS=${3:-10000}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
cargo build --release --locked -q
(cd bench/tools && cargo build --release -q)
BIN=target/release/vdh-edge
PATHQ='/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-42&platform=android&app_id=demo'
cp -r zones "$W/zones"
cp deploy/state.yaml "$W/state.yaml"

taskset -c 0 $BIN --log warn serve --zones "$W/zones" --state "$W/state.yaml" --dns 127.0.0.1:0 --http 127.0.0.1:18080 --admin 127.0.0.1:18090 & EDGE=$!
sleep 1
mkdir -p "$W/www/v1/config"
curl -s "http://127.0.0.1:18080$PATHQ" > "$W/www/v1/config/vdh-api"
cat > "$W/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $W/nginx.pid;
error_log $W/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/json;
    client_body_temp_path $W;
    proxy_temp_path $W;
    fastcgi_temp_path $W;
    uwsgi_temp_path $W;
    scgi_temp_path $W;
    keepalive_requests 100000;
    open_file_cache max=100;
    server {
        listen 127.0.0.1:18081 reuseport backlog=4096;
        root $W/www;
        etag on;
    }
}
CONF
taskset -c 0 nginx -c "$W/nginx.conf" & NGINX=$!
ETAG=$(curl -s -D - -o /dev/null "http://127.0.0.1:18080$PATHQ" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
taskset -c 0 bench/tools/target/release/bare-hyper --listen 127.0.0.1:18082 --body "$W/www/v1/config/vdh-api" --etag "$ETAG" & BARE=$!
sleep 1

# CPU time (user + system, clock ticks) of a server's processes: steadier
# than requests per second on a shared host, where another tenant's load
# slows every server but is not charged to them.
ticks() { # PID...
    local t=0 p
    for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}
HZ=$(getconf CLK_TCK)
run_wrk() { # URL LABEL PID...
    local url=$1 label=$2; shift 2
    local t0; t0=$(ticks "$@")
    taskset -c 1 wrk -t1 -c64 -d"${SECS}s" --latency "$url" > "$W/wrk"
    local t1; t1=$(ticks "$@")
    awk -v l="$label" -v t=$((t1 - t0)) -v hz="$HZ" '/requests in/ {n=$1} /Requests\/sec/ {rps=$2} / 99%/ {p99=$2; if (p99 ~ /ms$/) {sub(/ms/,"",p99); p99*=1000} else if (p99 ~ /us$/) {sub(/us/,"",p99)} else if (p99 ~ /s$/) {sub(/s/,"",p99); p99*=1000000}} END {printf "%s %s %s %.2f\n", l, rps, p99, t / hz * 1e6 / n}' "$W/wrk"
}
NGINX_WORKER=$(pgrep -P $NGINX)
for r in $(seq 1 "$ROUNDS"); do
    run_wrk "http://127.0.0.1:18081/v1/config/vdh-api" nginx $NGINX $NGINX_WORKER | tee -a "$W/r"
    run_wrk "http://127.0.0.1:18082$PATHQ" bare-hyper $BARE | tee -a "$W/r"
    run_wrk "http://127.0.0.1:18080$PATHQ" vdh-edge $EDGE | tee -a "$W/r"
done
kill $NGINX $BARE
python3 - "$W/r" <<'PY'
import statistics, sys
rows = {}
for l in open(sys.argv[1]):
    k, rps, p99, cpu = l.split()
    rows.setdefault(k, []).append((float(rps), float(p99), float(cpu)))
for k, v in rows.items():
    r = [x[0] for x in v]; p = [x[1] for x in v]; c = [x[2] for x in v]
    print(f"{k:<10} req/s median {statistics.median(r):.0f} (spread {min(r):.0f}-{max(r):.0f})  p99 median {statistics.median(p):.0f} us  CPU per request median {statistics.median(c):.2f} us ({min(c):.2f}-{max(c):.2f})")
n = statistics.median(x[0] for x in rows["nginx"]); e = statistics.median(x[0] for x in rows["vdh-edge"])
pn = statistics.median(x[1] for x in rows["nginx"]); pe = statistics.median(x[1] for x in rows["vdh-edge"])
b = statistics.median(x[0] for x in rows["bare-hyper"]); pb = statistics.median(x[1] for x in rows["bare-hyper"])
print(f"vdh-edge / nginx req/s: {e/n:.2f} (target >= 1.00); p99: {pe/pn:.2f} (target <= 1.00)")
print(f"vdh-edge / bare hyper req/s: {e/b:.2f} (target >= 0.90); p99: {pe/pb:.2f} (target <= 1.00)")
print(f"bare hyper / nginx req/s: {b/n:.2f}")
cn, ce, cb = (statistics.median(x[2] for x in rows[k]) for k in ("nginx", "vdh-edge", "bare-hyper"))
print(f"CPU per request, vdh-edge / nginx: {ce/cn:.2f}; vdh-edge / bare hyper: {ce/cb:.2f}")
PY

echo "long-polls: $POLLS held, one change"
taskset -c 1 bench/tools/target/release/longpolls --http 127.0.0.1:18080 --admin 127.0.0.1:18090 --pid $EDGE --state "$W/state.yaml" \
    --from "token_epoch: 1
services" --to "token_epoch: 2
services" --n "$POLLS"
kill $EDGE
