#!/usr/bin/env python3
"""Control latency: from the autoscaler's decision to raise a service's target to the
new replicas taking traffic through pharos's router, on Ray Serve and on the local
backend, under the same load and the same policy.

    cargo build --release -p pharos
    benches/ray/control_latency.py --ray-bin VENV/bin --out docs/results/ray [--rounds 3]

Each round starts a pharos server on a fresh data directory (and for Ray a fresh
`ray start --head` on loopback) and applies the example service (examples/ray/model.yaml
on Ray; pharos-replica at the same 20 ms per request locally). Then:
- steps: the target is set through the API to 2, 1, 3, 1, 4, 1 replicas (min = max),
  each step waiting until the service has exactly that many replicas;
- load: back to 1-4 replicas under the autoscaler, 50 requests/s for 40 s replayed
  against the router, so the policy's own scale-ups are timed too (how many depends on
  how fast the replicas turned out: each calibrates its work at start).
Every raise is one value of the service's `control_latency_s`, measured by the server
from the target change to enough replicas taking traffic through the router.

With --multihost (root, `ip` and `unshare`), a third backend: a two-host Ray cluster
built as crates/pharos/tests/ray_multihost.rs builds it - a head and a worker, each in a
network namespace of its own (own address on a bridge, private /tmp), with token
authentication - and the server in the host's namespace.
Writes OUT/control-latency.json and OUT/control-latency.md.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PHAROS = os.path.join(ROOT, "target", "release", "pharos")
REPLICA = os.path.join(ROOT, "target", "release", "pharos-replica")
TOKEN = "bench-admin-token-0123456789"
POLICY = (
    "autoscaler:\n  policy: faro-fairsum\n  params: {interval_s: 1, reactive_look_back_s: 3, "
    "reactive_checks: 2, first_predictive_s: 60, predictive_interval_s: 60, prediction: none, "
    "spread_leftover: false, move_cost: 0}\n"
)
LOCAL_SPEC = f"""name: model
command: ['{REPLICA}', --port, $PORT, --service-ms, '20']
cpus: 0.5
slo: {{ latency_s: 0.1, percentile: 99 }}
processing_time_s: 0.02
min_replicas: 1
max_replicas: 4
max_concurrent: 1
max_queue: 50
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, token=TOKEN):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def wait(what, f, secs):
    t0 = time.time()
    while time.time() - t0 < secs:
        try:
            v = f()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"timed out: {what}")


def spec_with(text, lo, hi):
    out = []
    for line in text.splitlines():
        if line.startswith("min_replicas:"):
            line = f"min_replicas: {lo}"
        elif line.startswith("max_replicas:"):
            line = f"max_replicas: {hi}"
        out.append(line)
    return "\n".join(out) + "\n"


def sh(*args):
    subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class NetnsCluster:
    """A Ray head and worker in network namespaces of their own, on a bridge."""

    def __init__(self, ray_bin, work, r):
        pid = os.getpid()
        # Names of their own each round (a namespace deleted a moment ago may still hold
        # its links).
        self.bridge = f"phc{pid % 10000}r{r}"
        self.prefix = f"10.{200 + pid % 50}.{(pid // 50 + r) % 250}"
        self.ns = [f"pharos-bench-{pid}-{r}-{n}" for n in ("head", "worker")]
        self.token = os.urandom(32).hex()
        self.children = []
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i, ns in enumerate(self.ns):
            veth = f"phc{pid % 10000}r{r}v{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", veth, "master", self.bridge, "up")
            for args in (["link", "set", "lo", "up"],
                         ["addr", "add", f"{self.ip(i)}/24", "dev", "eth0"],
                         ["link", "set", "eth0", "up"]):
                sh("ip", "netns", "exec", ns, "ip", *args)
        env = dict(os.environ, PATH=f"{ray_bin}:{os.environ['PATH']}", RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN=self.token)
        for i, ns in enumerate(self.ns):
            cmd = (f"{ray_bin}/ray start --node-ip-address {self.ip(i)} --num-cpus 4 "
                   "--disable-usage-stats --block ")
            cmd += ("--head --port 6379 --dashboard-host 0.0.0.0 --dashboard-port 8265"
                    if i == 0 else f"--address {self.ip(0)}:6379")
            log = open(os.path.join(work, f"netns-{r}-{i}.log"), "w")
            self.children.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", f"mount -t tmpfs tmpfs /tmp && exec {cmd}"],
                env=env, stdout=log, stderr=log))
            wait(f"{i + 1} Ray node(s)", lambda: len(self.alive()) == i + 1, 120)

    def ip(self, i):
        return f"{self.prefix}.{i + 2}"

    def alive(self):
        v = get(f"http://{self.ip(0)}:8265/api/v0/nodes?limit=100", self.token)
        return [n for n in v["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def stop(self):
        for ns in self.ns:
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for p in out.stdout.split():
                try:
                    os.kill(int(p), 9)
                except (ProcessLookupError, ValueError):
                    pass
        for c in self.children:
            c.wait()
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", self.bridge], stderr=subprocess.DEVNULL)


def run_round(backend, ray_bin, work, r):
    port = free_port()
    data = os.path.join(work, f"{backend}-{r}-data")
    cfg = os.path.join(work, f"{backend}.yaml")
    env = dict(os.environ, PHAROS_ADMIN_TOKEN=TOKEN)
    head = None
    cluster = None
    extra = "capacity: {cpus: 4}\n"
    if backend == "ray-multihost":
        cluster = NetnsCluster(ray_bin, work, r)
        token_file = os.path.join(work, "ray-token")
        with open(token_file, "w") as f:
            f.write(cluster.token)
        extra += (f"backend: ray\nray: {{address: 'http://{cluster.ip(0)}:8265', "
                  f"serve_url: 'http://{cluster.ip(0)}:8000', token_file: '{token_file}'}}\n")
    if backend == "ray":
        gcs, dash, serve = free_port(), free_port(), free_port()
        env_ray = dict(os.environ, PATH=f"{ray_bin}:{os.environ['PATH']}")
        subprocess.run(
            [os.path.join(ray_bin, "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
             "--dashboard-host", "127.0.0.1", "--port", str(gcs), "--dashboard-port", str(dash),
             "--num-cpus", "4", "--disable-usage-stats"],
            env=env_ray, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        head = (ray_bin, env_ray)
        extra += (f"backend: ray\nray: {{address: 'http://127.0.0.1:{dash}', "
                  f"serve_url: 'http://127.0.0.1:{serve}'}}\n")
    with open(cfg, "w") as f:
        f.write(f"listen: 127.0.0.1:{port}\ndata_dir: {data}\n{extra}{POLICY}")
    log = open(os.path.join(work, f"{backend}-server.log"), "a")
    server = subprocess.Popen([PHAROS, "server", "--config", cfg], env=env,
                              stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait("server", lambda: urllib.request.urlopen(base + "/healthz", timeout=2).status == 200, 30)
        cli_env = dict(os.environ, PHAROS_URL=base, PHAROS_TOKEN=TOKEN)
        if backend.startswith("ray"):
            spec = os.path.join(ROOT, "examples", "ray", "model.yaml")
        else:
            spec = os.path.join(work, "local-model.yaml")
            with open(spec, "w") as f:
                f.write(LOCAL_SPEC)
        # The spec's working_dir is relative to the example: made absolute for the copies.
        text = open(spec).read().replace(
            "working_dir: serve", f"working_dir: {os.path.join(ROOT, 'examples', 'ray', 'serve')}")
        step_spec = os.path.join(work, f"step-{backend}-{r}.yaml")

        def apply(lo, hi):
            with open(step_spec, "w") as f:
                f.write(spec_with(text, lo, hi))
            subprocess.run([PHAROS, "apply", "-f", step_spec], env=cli_env, check=True,
                           stdout=subprocess.DEVNULL)

        def exactly(n):
            s = get(base + "/v1/services/model")
            return s["ready_replicas"] == n and len(s["replicas"]) == n and s

        apply(1, 1)
        wait("one ready replica", lambda: exactly(1), 180)
        for n in (2, 1, 3, 1, 4, 1):
            apply(n, n)
            wait(f"{n} replicas", lambda: exactly(n), 180)
            time.sleep(1)
        steps = list(get(base + "/v1/services/model")["control_latency_s"]["all"])
        nodes = None
        if cluster:
            d = get(f"http://{cluster.ip(0)}:8265/api/serve/applications/", cluster.token)
            apply(4, 4)
            wait("4 replicas", lambda: exactly(4), 180)
            d = get(f"http://{cluster.ip(0)}:8265/api/serve/applications/", cluster.token)
            reps = d["applications"]["model"]["deployments"]["Model"]["replicas"]
            nodes = sorted({x.get("node_ip") for x in reps})
            apply(1, 1)
            wait("1 replica", lambda: exactly(1), 180)
            steps = list(get(base + "/v1/services/model")["control_latency_s"]["all"])
        apply(1, 4)
        v = get(base + "/v1/services/model")
        trace = os.path.join(work, "trace.csv")
        with open(trace, "w") as f:
            f.write("job,minute,requests\nmodel,0,2000\n")
        load = subprocess.run(
            [PHAROS, "load", "--trace", trace, "--url", v["url"] + "/infer", "--speedup", "1.5",
             "--slo-ms", "100", "--timeout-s", "5", "--json"],
            capture_output=True, text=True, check=True)
        time.sleep(10)
        s = get(base + "/v1/services/model")
        a = get(base + "/v1/autoscaler")
        return {
            "steps_s": steps,
            "load_s": s["control_latency_s"]["all"][len(steps):],
            "replica_state_age_s": a["replica_state_age_s"],
            "load": json.loads(load.stdout)["summary"],
            "events": get(base + "/v1/services/model/events")["events"],
            "replica_nodes_at_4": nodes,
        }
    finally:
        server.terminate()
        server.wait()
        if backend == "local":
            # Replicas outlive the server by design: stop them (each leads its group).
            rdir = os.path.join(data, "services", "model", "replicas")
            for name in os.listdir(rdir) if os.path.isdir(rdir) else []:
                if name.endswith(".json"):
                    with open(os.path.join(rdir, name)) as f:
                        pid = json.load(f)["pid"]
                    try:
                        os.killpg(pid, 9)
                    except ProcessLookupError:
                        pass
        if cluster:
            cluster.stop()
        if head:
            subprocess.run([os.path.join(head[0], "ray"), "stop", "--force"], env=head[1],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summary(values):
    if not values:
        return {"count": 0}
    return {"count": len(values), "median": statistics.median(values),
            "mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ray-bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--multihost", action="store_true",
                    help="also a two-host Ray cluster in network namespaces (root)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    backends = ("local", "ray", "ray-multihost") if a.multihost else ("local", "ray")
    results = {b: [] for b in backends}
    with tempfile.TemporaryDirectory() as work:
        for r in range(a.rounds):
            for backend in backends:
                print(f"round {r + 1}: {backend}", flush=True)
                results[backend].append(run_round(backend, a.ray_bin, work, r))
    out = {b: {"rounds": rs,
               "steps_s": summary([x for r in rs for x in r["steps_s"]]),
               "load_s": summary([x for r in rs for x in r["load_s"]])}
           for b, rs in results.items()}
    with open(os.path.join(a.out, "control-latency.json"), "w") as f:
        json.dump(out, f, indent=1)
    lines = [
        "# Control latency: decision to serving, Ray Serve against local replicas",
        "",
        "`benches/ray/control_latency.py"
        + (" --multihost" if a.multihost else "")
        + "` (the same 20 ms model, policy and load on each; "
        f"{a.rounds} rounds each). Steps: the target set through the API to 2, 1, 3, 1, 4, 1"
        + (" (on the two-host cluster then 4, 1 again, its replicas' nodes noted at 4)"
           if a.multihost else "")
        + "; load: the autoscaler's own scale-ups under 50 requests/s. One value per raise, "
        "from the target change to the replicas taking traffic through the router.",
        "",
        "- local: pharos-replica processes on this machine; ray: a Ray head on loopback; "
        "ray-multihost: a Ray head and a worker, each in a network namespace of its own "
        "(own address, private /tmp, token authentication), the server in a third.",
        "",
        "| backend | what | raises | median s | mean s | min s | max s | replica state age at decisions: mean / max s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for what, b in [(w, b) for w in ("steps", "load") for b in backends]:
        s = out[b][f"{what}_s"]
        ages = [r["replica_state_age_s"] for r in results[b]]
        n = sum(x["count"] for x in ages)
        mean_age = sum((x["mean"] or 0) * x["count"] for x in ages) / n if n else None
        max_age = max((x["max"] or 0) for x in ages) if n else None
        age = f"{mean_age:.3f} / {max_age:.3f}" if n else "- (probed in the same pass)"
        if what == "steps":
            age = ""
        if s["count"]:
            lines.append(f"| {b} | {what} | {s['count']} | {s['median']:.3f} | {s['mean']:.3f} | "
                         f"{s['min']:.3f} | {s['max']:.3f} | {age} |")
        else:
            lines.append(f"| {b} | {what} | 0 | - | - | - | - | {age} |")
    if a.multihost:
        seen = [r["replica_nodes_at_4"] for r in results["ray-multihost"]]
        lines += ["", f"Nodes of the 4 replicas on the two-host cluster, per round: {seen}"]
    with open(os.path.join(a.out, "control-latency.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
