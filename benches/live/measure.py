#!/usr/bin/env python3
"""Measures the service time the simulator is given: one pharos-replica (as the live
run's services start it) behind `pharos router`, 3000 requests one after another, the
latency each saw at the client. Prints the quantiles as a simulator distribution.

    python3 benches/live/measure.py [target/release]
"""
import json
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


bin_dir = sys.argv[1] if len(sys.argv) > 1 else "target/release"
rp, up, cp = free_port(), free_port(), free_port()
replica = subprocess.Popen([f"{bin_dir}/pharos-replica", "--port", str(rp), "--service-ms", "25",
                            "--dist", "exp", "--seed", "1"], stderr=subprocess.DEVNULL)
router = subprocess.Popen([f"{bin_dir}/pharos", "router", "--listen", f"127.0.0.1:{up}",
                           "--control", f"127.0.0.1:{cp}",
                           "--replica", f"http://127.0.0.1:{rp}"], stderr=subprocess.DEVNULL)
try:
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{rp}/healthz", timeout=1)
            urllib.request.urlopen(f"http://127.0.0.1:{cp}/router/stats", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    lat = []
    for _ in range(3000):
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{up}/infer", timeout=10) as r:
            r.read()
        lat.append(time.perf_counter() - t0)
finally:
    replica.kill()
    router.kill()
lat.sort()
qs = [0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1]
points = [[q, round(lat[min(len(lat) - 1, int(q * len(lat)))], 5)] for q in qs]
print(f"# {len(lat)} requests, mean {sum(lat) / len(lat) * 1e3:.2f} ms")
print(json.dumps({"kind": "quantiles", "points": points}))
