#!/usr/bin/env python3
"""Derives examples/live/trace.csv from the Faro evaluation trace (day 11).

Jobs 1, 7 and 9, trace minutes 0-125, time compressed 6x (one live minute holds the
requests of six trace minutes) and scaled by 0.11 so that three services fit a 2-core
machine. The live run replays the result at speedup 1, and the simulator reads the same
file, so both see the same request counts minute by minute.

Also writes examples/live/days.csv: the same three jobs' days 1-11 compressed the same
way (days of 60 minutes; day 11's first 21 minutes are trace.csv), the load history a
live server imports and the simulator's history days.

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
days_out = sys.argv[3] if len(sys.argv) > 3 else "examples/live/days.csv"
counts = defaultdict(dict)
by_day = defaultdict(lambda: defaultdict(dict))
with open(src) as f:
    for r in csv.DictReader(f):
        if r["job"] in JOBS:
            by_day[r["job"]][int(r["day"])][int(r["minute"])] = float(r["requests"])
            if r["day"] == "11":
                counts[r["job"]][int(r["minute"])] = float(r["requests"])
with open(days_out, "w") as f:
    f.write("job,day,minute,requests\n")
    for j in JOBS:
        for d in sorted(by_day[j]):
            c = by_day[j][d]
            for m in range(len(c) // SPEEDUP):
                n = sum(c[t] for t in range(m * SPEEDUP, (m + 1) * SPEEDUP))
                f.write(f"svc-{j},{d},{m},{round(n * SCALE)}\n")
with open(out, "w") as f:
    f.write("job,minute,requests\n")
    for j in JOBS:
        for m in range(MINUTES // SPEEDUP):
            n = sum(counts[j][t] for t in range(m * SPEEDUP, (m + 1) * SPEEDUP))
            f.write(f"svc-{j},{m},{round(n * SCALE)}\n")
