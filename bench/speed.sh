#!/usr/bin/env bash
# The speed table in one run: DNS against NSD (bench/dns-compare.sh),
# /v1/config against a tuned nginx and bare hyper (bench/http-compare.sh),
# a 1.2M-record zone load against Knot (bench/scale.sh, LOADS times), and
# propagation to EDGES loaded edges (bench/propagation.sh). Each part's
# full output is kept in OUT; the table at the end holds the ratios and
# the goals. Loopback only; every part stops by itself (about 15 minutes).
#
# usage: bench/speed.sh [ROUNDS] [SECONDS] [LOADS] [EDGES] [QPS]
#        (default 5 6 3 10 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-6}
LOADS=${3:-3}
EDGES=${4:-10}
QPS=${5:-20000}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
echo "speed: outputs in $OUT"
echo "== DNS ($ROUNDS rounds of $SECS s)"
bench/dns-compare.sh "$ROUNDS" "$SECS" | tee "$OUT/dns.txt"
echo "== HTTP ($ROUNDS rounds of $SECS s)"
bench/http-compare.sh "$ROUNDS" "$SECS" 10000 | tee "$OUT/http.txt"
echo "== zone load (1M hosts, $LOADS runs)"
# shellcheck disable=SC2046
bench/scale.sh $(for _ in $(seq 1 "$LOADS"); do echo 1000000; done) | tee "$OUT/scale.txt"
echo "== propagation ($EDGES edges, $QPS qps each)"
bench/propagation.sh "$EDGES" "$QPS" 200 | tee "$OUT/propagation.txt"

python3 - "$OUT" "$QPS" <<'PY'
import re, statistics, sys
out, qps = sys.argv[1], sys.argv[2]
def text(name): return open(f"{out}/{name}.txt").read()

dns = {}
for line in text("dns").splitlines():
    f = line.split()
    if len(f) == 7 and f[0] in ("nsd", "knot", "vdh-edge", "trivial"):
        dns[f[0]] = dict(qps=float(f[1]), spread=f[2], cpu=float(f[3]), cpu_spread=f[4], p99=float(f[6]))
http = {}
for m in re.finditer(r"^(\S+)\s+req/s median (\d+) \(spread (\S+)\)\s+p99 median (\d+) us\s+CPU per request median ([\d.]+) us", text("http"), re.M):
    http[m[1]] = dict(rps=float(m[2]), spread=m[3], p99=float(m[4]), cpu=float(m[5]))
loads = []
for line in text("scale").splitlines():
    f = line.split()
    if len(f) == 7 and f[0].isdigit():
        loads.append((int(f[0]), int(f[1]), int(f[2])))
prop = {}
for m in re.finditer(r"^(idle|under \d+ qps per edge)\s+changes (\d+)/(\d+) \(timeouts (\d+)\)\s+p50 ([\d.]+) ms\s+p99 ([\d.]+) ms", text("propagation"), re.M):
    prop["idle" if m[1] == "idle" else "loaded"] = dict(n=m[2], of=m[3], timeouts=m[4], p50=float(m[5]), p99=float(m[6]))
lost = re.search(r"unanswered per edge\s+(.*)", text("propagation"))

rows = []
def row(what, ours, anchor, ratio, goal, met):
    rows.append((what, ours, anchor, ratio, goal, "" if met is None else "met" if met else "NOT met"))
e, n, t = dns["vdh-edge"], dns["nsd"], dns["trivial"]
row("DNS saturated qps", f"{e['qps']:.0f}", f"NSD {n['qps']:.0f}; trivial {t['qps']:.0f}",
    f"{e['qps']/n['qps']:.2f}x NSD, {e['qps']/t['qps']:.2f}x trivial", ">= 0.90x trivial", e['qps'] / t['qps'] >= 0.90)
row("DNS CPU per query at 40k qps", f"{e['cpu']:.2f} us ({e['cpu_spread']})", f"NSD {n['cpu']:.2f} us ({n['cpu_spread']})",
    f"{e['cpu']/n['cpu']:.3f}x", "<= 0.85x", e['cpu'] / n['cpu'] <= 0.85)
v, g, h = http["vdh-edge"], http["nginx"], http["bare-hyper"]
row("/v1/config req/s (wrk -t1 -c64)", f"{v['rps']:.0f} ({v['spread']})", f"nginx {g['rps']:.0f}; hyper {h['rps']:.0f}",
    f"{v['rps']/g['rps']:.2f}x nginx, {v['rps']/h['rps']:.2f}x hyper", ">= 1.0x nginx, >= 0.9x hyper",
    v['rps'] >= g['rps'] and v['rps'] >= 0.9 * h['rps'])
row("/v1/config p99", f"{v['p99']:.0f} us", f"nginx {g['p99']:.0f} us; hyper {h['p99']:.0f} us",
    f"{v['p99']/g['p99']:.2f}x nginx, {v['p99']/h['p99']:.2f}x hyper", "<= 1.0x nginx", v['p99'] <= g['p99'])
row("/v1/config CPU per request", f"{v['cpu']:.2f} us", f"nginx {g['cpu']:.2f} us; hyper {h['cpu']:.2f} us",
    f"{v['cpu']/g['cpu']:.2f}x nginx, {v['cpu']/h['cpu']:.2f}x hyper", "", None)
if loads:
    ours = statistics.median(l[1] for l in loads); knot = statistics.median(l[2] for l in loads)
    row(f"{loads[0][0]}-record zone, start to answering", f"{ours:.0f} ms (median of {len(loads)})", f"Knot {knot:.0f} ms",
        f"{ours/knot:.2f}x", "<= 1.0x", ours <= knot)
for k, label in (("idle", "idle"), ("loaded", f"{qps} qps each")):
    if k in prop:
        p = prop[k]
        row(f"propagation, edges {label}", f"p50 {p['p50']:.2f} / p99 {p['p99']:.2f} ms",
            f"{p['n']}/{p['of']} changes, {p['timeouts']} timeouts", "", "p99 < 5 ms" if k == "loaded" else "",
            p['p99'] < 5 if k == "loaded" else None)
print()
print("| what | vdh-edge | anchor | ratio | goal | |")
print("|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
if lost:
    print(f"\nunanswered per loaded edge during the propagation run: {lost[1]}")
PY
