#!/usr/bin/env bash
# A 3-member etcd cluster on loopback for development and tests.
#
#   deploy/etcd-cluster.sh start              # members n0 n1 n2 on 127.0.0.1:2379, :2389, :2399
#   deploy/etcd-cluster.sh status             # one line per member
#   deploy/etcd-cluster.sh stop-member 1      # stop n1 (data kept): quorum stays with n0 and n2
#   deploy/etcd-cluster.sh start-member 1     # start n1 again from its data
#   deploy/etcd-cluster.sh restart-member 1   # both
#   deploy/etcd-cluster.sh stop               # stop every member, wait for each to exit, remove the data
#
# Variables:
#   VDH_ETCD_PORT  client port of n0 (default 2379); n1 and n2 use +10 and
#                  +20, and each member's peer port is its client port + 1
#   VDH_ETCD_DATA  data folder (default /dev/shm/vdh-edge-etcd); member logs
#                  are n0.log, n1.log, n2.log in it
#
# Data lives on /dev/shm: etcd 3.4 cannot skip fsync, and on a disk shared
# with busy builds elections flap. History is compacted the way production
# should: periodic compaction keeping 72 hours, so `vdh-edge rollback` can go
# back three days (`vdh-edge status` names the oldest revision left), and a
# 2 GiB backend quota so a runaway writer cannot fill the disk.
set -euo pipefail
DATA=${VDH_ETCD_DATA:-/dev/shm/vdh-edge-etcd}
B=${VDH_ETCD_PORT:-2379}
PORTS=("$B" $((B + 10)) $((B + 20)))
PEERS=($((B + 1)) $((B + 11)) $((B + 21)))
CLUSTER="n0=http://127.0.0.1:${PEERS[0]},n1=http://127.0.0.1:${PEERS[1]},n2=http://127.0.0.1:${PEERS[2]}"
ENDPOINTS="http://127.0.0.1:${PORTS[0]},http://127.0.0.1:${PORTS[1]},http://127.0.0.1:${PORTS[2]}"

# The pid of member $1 if it runs.
pid_of() {
    local f="$DATA/n$1.pid"
    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

start_member() {
    local i=$1
    if pid_of "$i" >/dev/null; then
        echo "n$i already runs (pid $(pid_of "$i"))" >&2
        exit 1
    fi
    mkdir -p "$DATA"
    # A member with data rejoins as it was; the initial-cluster flags only
    # matter the first time.
    local state=new
    [ -d "$DATA/n$i/member" ] && state=existing
    etcd --name "n$i" --data-dir "$DATA/n$i" \
        --listen-client-urls "http://127.0.0.1:${PORTS[$i]}" --advertise-client-urls "http://127.0.0.1:${PORTS[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${PEERS[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${PEERS[$i]}" \
        --initial-cluster "$CLUSTER" --initial-cluster-token vdh-edge-dev --initial-cluster-state "$state" \
        --auto-compaction-mode periodic --auto-compaction-retention 72h \
        --quota-backend-bytes $((2 * 1024 * 1024 * 1024)) \
        --log-level warn >> "$DATA/n$i.log" 2>&1 &
    echo $! > "$DATA/n$i.pid"
}

# Waits until the members $@ are healthy; fails at once, with the member's
# last log lines, when one of them exits.
wait_healthy() {
    for _ in $(seq 100); do
        for i in "$@"; do
            if ! pid_of "$i" >/dev/null; then
                echo "etcd member n$i exited; last lines of $DATA/n$i.log:" >&2
                tail -n 15 "$DATA/n$i.log" >&2
                exit 1
            fi
        done
        local eps=""
        for i in "$@"; do eps="$eps${eps:+,}http://127.0.0.1:${PORTS[$i]}"; done
        if ETCDCTL_API=3 etcdctl --endpoints "$eps" endpoint health >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "etcd members $* not healthy after 10 s; logs in $DATA" >&2
    exit 1
}

# Stops member $1 and waits until it has exited (SIGKILL after 10 s).
stop_member() {
    local i=$1 pid
    pid=$(pid_of "$i") || { rm -f "$DATA/n$i.pid"; return 0; }
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$DATA/n$i.pid"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$DATA/n$i.pid"
}

member_arg() {
    case "${1:-}" in
        0 | 1 | 2) ;;
        *) echo "usage: $0 $2 0|1|2" >&2; exit 2 ;;
    esac
}

case "${1:-}" in
    start)
        command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
        for i in 0 1 2; do start_member "$i"; done
        wait_healthy 0 1 2
        echo "etcd cluster up: --etcd $ENDPOINTS"
        ;;
    stop)
        for i in 0 1 2; do stop_member "$i"; done
        rm -rf "$DATA"
        ;;
    stop-member)
        member_arg "${2:-}" stop-member
        stop_member "$2"
        ;;
    start-member)
        member_arg "${2:-}" start-member
        start_member "$2"
        wait_healthy "$2"
        ;;
    restart-member)
        member_arg "${2:-}" restart-member
        stop_member "$2"
        start_member "$2"
        wait_healthy "$2"
        ;;
    status)
        for i in 0 1 2; do
            if pid=$(pid_of "$i"); then echo "n$i 127.0.0.1:${PORTS[$i]} running (pid $pid)"; else echo "n$i 127.0.0.1:${PORTS[$i]} stopped"; fi
        done
        ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint status -w table 2>/dev/null || true
        ;;
    *)
        echo "usage: $0 start|stop|status|stop-member N|start-member N|restart-member N" >&2
        exit 2
        ;;
esac
