#!/usr/bin/env python3
"""Generates the benchmark inputs: a yingzi.com zone with N host records,
the same zone with the vdh-api names written out as static records (for
servers that do not derive them), and a dnsperf query file with the mix
60% vdh-api.yingzi.com A, 20% existing A, 10% AAAA/TXT, 10% NXDOMAIN.

usage: gen.py OUTDIR [RECORDS] [QUERIES] [ORIGIN]

With ORIGIN other than yingzi.com, the hosts go in their own zone
ORIGIN (zones/ORIGIN.zone) and yingzi.com is left to the caller.
"""
import os
import random
import sys

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
nq = int(sys.argv[3]) if len(sys.argv) > 3 else 100000
origin = sys.argv[4] if len(sys.argv) > 4 else "yingzi.com"
os.makedirs(os.path.join(out, "zones"), exist_ok=True)
os.makedirs(os.path.join(out, "static"), exist_ok=True)

head = f"""$ORIGIN {origin}.
$TTL 3600
@ IN SOA ns1.{origin}. hostmaster.{origin}. 2026112601 7200 3600 1209600 300
@ IN NS ns1
@ IN NS ns2
ns1 IN A 192.0.2.53
ns2 IN A 198.51.100.53
"""
hosts = []
for i in range(n):
    hosts.append(f"h{i} IN A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
    if i % 10 == 0:
        hosts.append(f"h{i} IN AAAA 2001:db8::{i >> 16:x}:{i & 0xffff:x}\n")
        hosts.append(f'h{i} IN TXT "host {i}"\n')
body = head + "".join(hosts)
with open(os.path.join(out, "zones", f"{origin}.zone"), "w") as f:
    f.write(body)
derived = """vdh-api IN 60 A 192.0.2.10
vdh-api IN 60 A 192.0.2.11
vdh-api-prod IN 60 A 192.0.2.10
vdh-api-prod IN 60 A 192.0.2.11
vdh-api.test IN 60 A 198.51.100.10
vdh-api-v1 IN 60 A 203.0.113.10
vdh-api-v1 IN 60 A 203.0.113.11
""".replace("IN 60", "60 IN")
if origin == "yingzi.com":
    with open(os.path.join(out, "static", "yingzi.com.zone"), "w") as f:
        f.write(body + derived)

rnd = random.Random(42)
with open(os.path.join(out, "queries.txt"), "w") as f:
    for _ in range(nq):
        r = rnd.random()
        if r < 0.6:
            f.write("vdh-api.yingzi.com A\n")
        elif r < 0.8:
            f.write(f"h{rnd.randrange(n)}.{origin} A\n")
        elif r < 0.9:
            i = rnd.randrange(n // 10) * 10
            f.write(f"h{i}.{origin} {'AAAA' if rnd.random() < 0.5 else 'TXT'}\n")
        else:
            # A fixed set of missing names, so reference responders can
            # learn every answer.
            f.write(f"nx{rnd.randrange(1000)}.{origin} A\n")
