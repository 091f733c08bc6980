#!/usr/bin/env bash
# The soak with faults (tests/it/soak.rs) for MINUTES minutes: 3 etcd
# members and 3 edges on loopback, DNS (UDP, TCP, DoT) and HTTPS (config,
# long-polls, resolve) at fixed rates, one change per second, a fault every
# 20 s in rotation (SIGKILL an edge, SIGKILL the etcd leader, SIGSTOP an etcd
# member for 15 s, compact etcd past a stopped edge, fill an edge's cache
# file system). Prints the report; fails on a lost answer while its edge
# was up, an answer mixing two changes, an edge not on the last revision,
# or descriptors growing. Needs root (the tmpfs mount). Loopback only.
#
# usage: bench/soak.sh [MINUTES]   (the test suite runs 2)
set -euo pipefail
cd "$(dirname "$0")/.."
. script/lib.sh
need_build_deps
need_pkgs etcd:etcd-server etcdctl:etcd-client kdig:knot-dnsutils
MINUTES=${1:-30}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
status=0
VDH_SOAK_MINUTES=$MINUTES cargo test --release --locked --test it soak::soak_with_faults -- --exact --nocapture \
    > "$OUT" 2>&1 || status=$?
sed -n '/^soak:/,/^$/p' "$OUT" | awk '!seen[$0]++'
# No report means the test did not run (or died before its end).
if ! grep -q '^soak:' "$OUT" || ! grep -q '1 passed' "$OUT"; then
    tail -30 "$OUT"
    echo "soak: no report or not passed (exit $status)"
    exit 1
fi
exit "$status"
