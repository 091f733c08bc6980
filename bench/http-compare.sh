#!/usr/bin/env bash
# Compares /v1/config (documents computed per request) with nginx serving the
# same document bytes as a static file. wrk: one thread, 64 connections, on
# CPU 1; each server on CPU 0. Loopback only; every run stops by itself.
#
# usage: bench/http-compare.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. script/lib.sh
need_pkgs wrk:wrk nginx:nginx-light
SECS=${1:-10}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
cargo build --release --locked -q
BIN=target/release/vdh-edge
PATHQ='/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-42&platform=android&app_id=demo'

taskset -c 0 $BIN --log warn serve --dns 127.0.0.1:0 --http 127.0.0.1:18080 & EDGE=$!
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
    server {
        listen 127.0.0.1:18081;
        root $W/www;
        etag on;
    }
}
CONF
taskset -c 0 nginx -c "$W/nginx.conf" & NGINX=$!
sleep 1

run_wrk() { # URL LABEL
    taskset -c 1 wrk -t1 -c64 -d"${SECS}s" --latency "$1" \
        | awk -v l="$2" '/Requests\/sec/ {rps=$2} / 99%/ {p99=$2} END {printf "%s req/s %s p99 %s\n", l, rps, p99}'
}
run_wrk "http://127.0.0.1:18081/v1/config/vdh-api" nginx | tee "$W/r"
run_wrk "http://127.0.0.1:18080$PATHQ" vdh-edge | tee -a "$W/r"
awk '/^nginx/ {n=$3} /^vdh-edge/ {e=$3} END {printf "ratio vdh-edge/nginx: %.2f\n", e/n}' "$W/r"
