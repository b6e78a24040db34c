#!/usr/bin/env python3
"""Samples every service's replicas every 2 s: sample.py URL TOKEN OUT.csv"""
import json
import sys
import time
import urllib.request

url, token, out = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.time()
with open(out, "w") as f:
    f.write("t_s,service,ready,starting,target,queued,in_flight\n")
    while True:
        req = urllib.request.Request(f"{url}/v1/services", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                doc = json.load(r)
            t = time.time() - t0
            for s in doc["services"]:
                f.write(f"{t:.1f},{s['name']},{s['ready_replicas']},{s['starting_replicas']},"
                        f"{s['target_replicas']},{s['queued']},{s['in_flight']}\n")
            f.flush()
        except OSError:
            pass
        time.sleep(2)
