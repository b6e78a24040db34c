#!/usr/bin/env python3
"""Page loads of the dashboard with 1,000 training jobs and 50 inference services.

    cargo build --release -p pharos && npm ci --prefix tests/browser
    benches/dashboard/page_load.py [--out docs/results/dashboard-page-load.json]

Starts a `pharos server` (1 vCPU: one job runs, 999 wait with their reasons; 50 services
with no replica, as nothing is left for them), submits the jobs through the API, then
loads the jobs, services and cluster pages five times each in headless Chromium
(tests/browser/dashboard.mjs with BENCH=1): from navigation to the page's table drawn.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PHAROS = os.path.join(ROOT, "target", "release", "pharos")
REPLICA = os.path.join(ROOT, "target", "release", "pharos-replica")
TOKEN = "bench-admin-token-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None, ctype="application/yaml"):
    req = urllib.request.Request(base + path, method=method, data=body,
                                 headers={"Authorization": f"Bearer {TOKEN}", "content-type": ctype})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--out")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        cfg = os.path.join(work, "server.yaml")
        with open(cfg, "w") as f:
            f.write(f"listen: 127.0.0.1:{port}\ndata_dir: {work}/data\ncapacity: {{cpus: 1}}\n"
                    "history_interval_s: 1\n")
        log = open(os.path.join(work, "server.log"), "w")
        server = subprocess.Popen([PHAROS, "server", "--config", cfg], stdout=subprocess.DEVNULL,
                                  stderr=log, env=dict(os.environ, PHAROS_ADMIN_TOKEN=TOKEN))
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1)
                    break
                except Exception:
                    time.sleep(0.1)
            manifest = ("name: job-{i}\nlearners: 1\ncpus: 1\nmemory: 64MiB\n"
                        "framework: {{name: custom, command: 'sleep 3600'}}\n")
            t0 = time.time()
            with ThreadPoolExecutor(8) as ex:
                list(ex.map(lambda i: call(base, "POST", "/v1/models", manifest.format(i=i).encode()),
                            range(a.jobs)))
            for i in range(a.services):
                spec = (f"name: svc-{i}\ncommand: ['{REPLICA}', --port, $PORT]\ncpus: 1\n"
                        "slo: {latency_s: 0.1}\nprocessing_time_s: 0.02\nmin_replicas: 0\nmax_replicas: 2\n")
                call(base, "PUT", f"/v1/services/svc-{i}", spec.encode())
            print(f"{a.jobs} jobs and {a.services} services made in {time.time() - t0:.1f} s", flush=True)
            time.sleep(3)  # a few history samples, the scheduler's wait reasons
            out = subprocess.run(["node", os.path.join(ROOT, "tests", "browser", "dashboard.mjs")],
                                 env=dict(os.environ, PHAROS_URL=base, TOKEN_A=TOKEN, BENCH="1"),
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"browser run failed:\n{out.stdout}{out.stderr}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            res["jobs_made"] = a.jobs
            res["services_made"] = a.services
            for page, r in res.items():
                if isinstance(r, dict):
                    ms = sorted(r["ms"])
                    print(f"{page:<9} {r['rows']:>5} rows  load ms: {ms}  median {ms[len(ms) // 2]}")
            if a.out:
                with open(a.out, "w") as f:
                    json.dump(res, f, indent=1)
        finally:
            server.terminate()
            server.wait()
            # Learners outlive the server by design: stop their process groups.
            import glob
            for f in glob.glob(os.path.join(work, "data", "jobs", "*", "state", "*", "*", "pid")):
                try:
                    os.killpg(int(open(f).read().strip()), 9)
                except (ValueError, ProcessLookupError, PermissionError):
                    pass
            subprocess.run(["pkill", "-9", "-f", os.path.join(work, "data")], stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
