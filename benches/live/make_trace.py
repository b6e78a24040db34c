#!/usr/bin/env python3
"""Derives examples/live/trace.csv from the Faro evaluation trace (day 11).

Jobs 1, 7 and 9, trace minutes 0-125, time compressed 6x (one live minute holds the
requests of six trace minutes) and scaled by 0.11 so that three services fit a 2-core
machine. The live run replays the result at speedup 1, and the simulator reads the same
file, so both see the same request counts minute by minute.

    python3 benches/live/make_trace.py [data/faro-10jobs/requests_per_minute.csv]
"""
import csv
import sys
from collections import defaultdict

JOBS = ["1", "7", "9"]
SPEEDUP = 6
MINUTES = 126
SCALE = 0.11

src = sys.argv[1] if len(sys.argv) > 1 else "data/faro-10jobs/requests_per_minute.csv"
out = sys.argv[2] if len(sys.argv) > 2 else "examples/live/trace.csv"
counts = defaultdict(dict)
with open(src) as f:
    for r in csv.DictReader(f):
        if r["day"] == "11" and r["job"] in JOBS:
            counts[r["job"]][int(r["minute"])] = float(r["requests"])
with open(out, "w") as f:
    f.write("job,minute,requests\n")
    for j in JOBS:
        for m in range(MINUTES // SPEEDUP):
            n = sum(counts[j][t] for t in range(m * SPEEDUP, (m + 1) * SPEEDUP))
            f.write(f"svc-{j},{m},{round(n * SCALE)}\n")
