#!/usr/bin/env bash
# TLS speed, each server on CPU 0, the load generator on CPU 1, ROUNDS
# alternated rounds, medians and spread:
#   1. /v1/config over HTTPS keep-alive (wrk, 64 connections): vdh-edge
#      computing the document vs nginx (one worker, keepalive_requests
#      100000, open_file_cache) serving the same bytes with the same
#      certificate (ECDSA P-256, TLS 1.3);
#   2. new TLS connections per second (wrk with Connection: close: one
#      handshake and one request each), same pair;
#   3. DNS over TLS vs our own DNS over TCP (dnsperf -m dot / -m tcp; the
#      Knot DNS of Debian 12, 3.2, has no DNS-over-TLS server);
#   4. saturated DNS over UDP with RRL on (a rate no query reaches) vs off.
# Loopback only; stops by itself.
#
# usage: bench/tls-compare.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. script/lib.sh
need_build_deps
need_pkgs wrk:wrk nginx:nginx-light dnsperf:dnsperf openssl:openssl
ROUNDS=${1:-3}
SECS=${2:-8}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
cargo build --release --locked -q
BIN=target/release/vdh-edge
PATHQ='/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-42&platform=android&app_id=demo'
cp -r zones "$W/zones"
cp deploy/state.yaml "$W/state.yaml"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null

taskset -c 0 $BIN --log warn serve --zones "$W/zones" --state "$W/state.yaml" \
    --dns 127.0.0.1:18053 --http 127.0.0.1:18443 --admin 127.0.0.1:18090 \
    --tls-cert "$W/cert.pem" --tls-key "$W/key.pem" --dot 127.0.0.1:18853 & EDGE=$!
sleep 1
mkdir -p "$W/www/v1/config"
curl -s --cacert "$W/cert.pem" "https://127.0.0.1:18443$PATHQ" > "$W/www/v1/config/vdh-api"
cat > "$W/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $W/nginx.pid;
error_log $W/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    keepalive_requests 100000;
    open_file_cache max=1000 inactive=60s;
    client_body_temp_path $W;
    proxy_temp_path $W;
    fastcgi_temp_path $W;
    uwsgi_temp_path $W;
    scgi_temp_path $W;
    server {
        listen 127.0.0.1:18444 ssl;
        ssl_certificate $W/cert.pem;
        ssl_certificate_key $W/key.pem;
        ssl_protocols TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        root $W/www;
        etag on;
    }
}
CONF
taskset -c 0 nginx -c "$W/nginx.conf" & NGINX=$!
sleep 1

run_wrk() { # LABEL URL [wrk args]
    local label=$1 url=$2; shift 2
    taskset -c 1 wrk -t1 -c64 -d"${SECS}s" "$@" "$url" \
        | awk -v l="$label" '/Requests\/sec/ {print l, $2}'
}
for r in $(seq 1 "$ROUNDS"); do
    run_wrk https-nginx "https://127.0.0.1:18444/v1/config/vdh-api" | tee -a "$W/r"
    run_wrk https-edge "https://127.0.0.1:18443$PATHQ" | tee -a "$W/r"
    run_wrk handshake-nginx "https://127.0.0.1:18444/v1/config/vdh-api" -H 'Connection: close' | tee -a "$W/r"
    run_wrk handshake-edge "https://127.0.0.1:18443$PATHQ" -H 'Connection: close' | tee -a "$W/r"
done
kill $NGINX

# DNS: one query file, as many queries as dnsperf can send.
printf 'vdh-api.yingzi.com A\nyingzi.com SOA\nwww.yingzi.com A\nnx.yingzi.com AAAA\n' > "$W/q"
run_dnsperf() { # LABEL MODE PORT
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$3" -m "$2" -d "$W/q" -c 32 -l "$SECS" -q 500 2>&1 \
        | awk -v l="$1" '/Queries per second/ {print l, $4}'
}
for r in $(seq 1 "$ROUNDS"); do
    run_dnsperf dns-tcp tcp 18053 | tee -a "$W/r"
    run_dnsperf dns-dot dot 18853 | tee -a "$W/r"
done
kill $EDGE; wait $EDGE 2>/dev/null || true

# RRL on (a rate no query reaches: nothing is limited) vs off.
for r in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
        extra=""; [ $mode = on ] && extra="--rrl-rate 100000000"
        # shellcheck disable=SC2086
        taskset -c 0 $BIN --log warn serve --zones "$W/zones" --state "$W/state.yaml" \
            --dns 127.0.0.1:18053 --http 127.0.0.1:0 --admin 127.0.0.1:0 --udp-workers 1 $extra & E=$!
        sleep 1
        run_dnsperf "udp-rrl-$mode" udp 18053 | tee -a "$W/r"
        kill $E; wait $E 2>/dev/null || true
    done
done

python3 - "$W/r" <<'PY'
import statistics, sys
rows = {}
for l in open(sys.argv[1]):
    k, v = l.split()
    rows.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in rows.items()}
for k, v in rows.items():
    print(f"{k:<16} median {med[k]:>9.0f}/s (spread {min(v):.0f}-{max(v):.0f})")
print(f"HTTPS keep-alive  vdh-edge / nginx: {med['https-edge'] / med['https-nginx']:.2f}")
print(f"new TLS conns     vdh-edge / nginx: {med['handshake-edge'] / med['handshake-nginx']:.2f}")
print(f"DNS over TLS / DNS over TCP (ours): {med['dns-dot'] / med['dns-tcp']:.2f}")
print(f"UDP RRL on / off:                   {med['udp-rrl-on'] / med['udp-rrl-off']:.3f} (target >= 0.97)")
PY
