#!/usr/bin/env python3
"""Simulates a live run again with the service time its replicas really had.

The simulator's service time in examples/live/sim.yaml was measured on an idle machine.
In a live run the replicas share 2 cores with each other, the routers, the server and
the load generators, and calibrate their work at start-up under whatever load there is,
so their mean service time differs. The router measures it: busy replica-seconds over
completed requests (one request at a time per replica). This script scales the measured
distribution per service to that mean and runs the simulator on it:

    python3 benches/live/sim_observed.py LIVE_DIR/POLICY OUT_DIR [target/release]
"""
import json
import os
import re
import subprocess
import sys

run_dir, out_dir = sys.argv[1], sys.argv[2]
bin_dir = sys.argv[3] if len(sys.argv) > 3 else "target/release"
policy = os.path.basename(os.path.normpath(run_dir))
root = os.path.dirname(os.path.abspath(__file__)) + "/../.."
base = open(os.path.join(root, "examples/live/sim.yaml")).read()
m = re.search(r"service_time: (\{.*\})", base)
dist = json.loads(m.group(1))
pts = dist["points"]
# The mean of the piecewise-linear inverse CDF.
mean = sum((q1 - q0) * (v0 + v1) / 2 for (q0, v0), (q1, v1) in zip(pts, pts[1:]))
overrides = {}
for svc in ["svc-1", "svc-7", "svc-9"]:
    c = json.load(open(os.path.join(run_dir, f"service-{svc}.json")))["counters"]
    observed = c["busy_replica_s"] / c["completed"]
    k = observed / mean
    overrides[svc] = {"service_time": {"kind": "quantiles", "points": [[q, round(v * k, 6)] for q, v in pts]}}
    print(f"{svc}: mean service {observed * 1e3:.1f} ms live, {mean * 1e3:.1f} ms measured idle (x{k:.2f})")
text = base.replace("name: live-sim", f"name: live-sim-observed-{policy}")
text = re.sub(r"policies:\n(  - .*\n)+", f"policies:\n  - {policy}\n", text)
text += "overrides: " + json.dumps(overrides) + "\n"
path = os.path.join(root, "examples/live", f".observed-{policy}.yaml")
with open(path, "w") as f:
    f.write(text)
try:
    subprocess.run([f"{bin_dir}/pharos", "simulate", path, "--out", out_dir], check=True,
                   stdout=subprocess.DEVNULL)
finally:
    os.remove(path)
