#!/usr/bin/env bash
# A 3-member etcd cluster on loopback for development and tests.
#
#   deploy/etcd-cluster.sh start     # members on 127.0.0.1:2379, :2389, :2399
#   VDH_ETCD_PORT=12379 VDH_ETCD_DATA=/dev/shm/x deploy/etcd-cluster.sh start   # elsewhere
#   deploy/etcd-cluster.sh status
#   deploy/etcd-cluster.sh stop      # stops and removes the data
#
# Data lives on /dev/shm: etcd 3.4 cannot skip fsync, and on a disk shared
# with busy builds elections flap. History is compacted the way production
# should: periodic compaction keeping 72 hours, so `vdh-edge rollback` can go
# back three days (`vdh-edge status` names the oldest revision left), and a
# 2 GiB backend quota so a runaway writer cannot fill the disk.
set -euo pipefail
DATA=${VDH_ETCD_DATA:-/dev/shm/vdh-edge-etcd}
B=${VDH_ETCD_PORT:-2379}
PORTS=($B $((B + 10)) $((B + 20)))
PEERS=($((B + 1)) $((B + 11)) $((B + 21)))
CLUSTER="n0=http://127.0.0.1:${PEERS[0]},n1=http://127.0.0.1:${PEERS[1]},n2=http://127.0.0.1:${PEERS[2]}"
ENDPOINTS="http://127.0.0.1:${PORTS[0]},http://127.0.0.1:${PORTS[1]},http://127.0.0.1:${PORTS[2]}"

start() {
    command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
    mkdir -p "$DATA"
    for i in 0 1 2; do
        etcd --name "n$i" --data-dir "$DATA/n$i" \
            --listen-client-urls "http://127.0.0.1:${PORTS[$i]}" --advertise-client-urls "http://127.0.0.1:${PORTS[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${PEERS[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${PEERS[$i]}" \
            --initial-cluster "$CLUSTER" --initial-cluster-token vdh-edge-dev \
            --auto-compaction-mode periodic --auto-compaction-retention 72h \
            --quota-backend-bytes $((2 * 1024 * 1024 * 1024)) \
            --log-level warn > "$DATA/n$i.log" 2>&1 &
        echo $! > "$DATA/n$i.pid"
    done
    for _ in $(seq 50); do
        if ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; then
            echo "etcd cluster up: --etcd $ENDPOINTS"
            return 0
        fi
        sleep 0.2
    done
    echo "etcd did not become healthy; logs in $DATA" >&2
    exit 1
}

stop() {
    for i in 0 1 2; do
        [ -f "$DATA/n$i.pid" ] && kill "$(cat "$DATA/n$i.pid")" 2>/dev/null || true
    done
    sleep 0.5
    rm -rf "$DATA"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint status -w table ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
