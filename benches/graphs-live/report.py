#!/usr/bin/env python3
"""Compares the live function-graph runs (benches/graphs-live/run.sh) with the simulator
on the same scenario (benches/graphs-live/sim.yaml) and draws per-minute plots.

    python3 benches/graphs-live/report.py LIVE_DIR SIM_DIR
    # LIVE_DIR/<policy>/ from run.sh; SIM_DIR from `pharos graph benches/graphs-live/sim.yaml --out SIM_DIR`

LIVE_DIR/<policy>-2/, -3/ ...: repeated live runs of the same policy, a row each.

Per policy and app: requests, failed (live: dropped - a full queue, a queue timeout or
no answer in 30 s - over all requests; sim: timed out or rejected anywhere), mean and
p99 response of the answered requests (live: at the client, from the scheduled send
time), vCPU-seconds held by the app's replicas (ready and starting; live: sampled every
2 s), and the CPU time the replicas used (live only, both apps). The simulator's side
is its mean over seeds, its median and 10th-90th percentile, and where the live value
ranks among the seeds (per-function policies on a full pool are bimodal: who takes the
pool first decides). Writes LIVE_DIR/summary.md and LIVE_DIR/<policy>.svg.
"""
import csv
import json
import os
import sys
from collections import defaultdict

live_dir, sim_dir = sys.argv[1], sys.argv[2]
APPS = ["diamond", "fanout"]
POLICIES = ["fluid", "hpa", "kpa"]


def live_run(d):
    loads = {}
    for a in APPS:
        with open(os.path.join(d, f"load-{a}.json")) as f:
            loads[a] = json.load(f)
    n_min = max(len(loads[a]["minutes"]) for a in APPS)
    end = n_min * 60.0
    # vCPUs held per sample time and app; the load started within a second of the first
    # sample.
    held = defaultdict(lambda: defaultdict(float))
    used = []
    with open(os.path.join(d, "replicas.csv")) as f:
        for r in csv.DictReader(f):
            t = float(r["t_s"])
            held[t][r["graph"]] += (int(r["ready"]) + int(r["starting"])) * float(r["cpus"])
            used.append((t, float(r["replica_cpu_s"])))
    times = sorted(t for t in held if t <= end)
    cpu_s = {a: 0.0 for a in APPS}
    per_min = [[] for _ in range(n_min)]
    for i, t in enumerate(times):
        dt = (times[i + 1] if i + 1 < len(times) else end) - t
        for a in APPS:
            cpu_s[a] += held[t][a] * dt
        per_min[min(int(t // 60), n_min - 1)].append(sum(held[t].values()))
    held_min = [sum(v) / len(v) if v else 0.0 for v in per_min]
    in_window = [u for t, u in used if t <= end]
    used_s = in_window[-1] - in_window[0] if in_window else 0.0
    apps = {}
    for a in APPS:
        s = loads[a]["summary"]
        lat = s.get("latency_ms") or {}
        apps[a] = {
            "requests": s["requests"],
            "failed": s["dropped"] / s["requests"] if s["requests"] else 0.0,
            "mean_ms": lat.get("mean"),
            "p99_ms": lat.get("p99"),
            "cpu_s": cpu_s[a],
            "dropped_by": s["dropped_by"],
        }
    failed_min = [sum(loads[a]["minutes"][m]["dropped"] for a in APPS if m < len(loads[a]["minutes"]))
                  for m in range(n_min)]
    p99_min = {a: [r["p99_s"] for r in loads[a]["minutes"]] for a in APPS}
    return apps, held_min, failed_min, p99_min, used_s, n_min


def sim_runs(policy):
    with open(os.path.join(sim_dir, "results.json")) as f:
        doc = json.load(f)
    return [r for r in doc["runs"] if r["policy"] == policy]


def sim_apps(runs):
    out = {}
    for a in APPS:
        rows = [next(x for x in r["result"]["apps"] if x["name"] == a) for r in runs]
        n = len(rows)
        out[a] = {
            "requests": sum(x["arrivals"] for x in rows) / n,
            "failed": sum(x["failed"] / x["arrivals"] for x in rows) / n,
            "mean_ms": sum(x["mean_s"] for x in rows) / n * 1e3,
            "p99_ms": sum(x["p99_s"] for x in rows) / n * 1e3,
            "cpu_s": sum(x["resource_s"] for x in rows) / n,
            "seeds_failed": sorted(x["failed"] / x["arrivals"] for x in rows),
            "seeds_mean_ms": sorted(x["mean_s"] * 1e3 for x in rows),
        }
    return out


def quantile(xs, q):
    """xs sorted; the q-quantile by linear interpolation."""
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q
    i = int(k)
    return xs[i] + (xs[min(i + 1, len(xs) - 1)] - xs[i]) * (k - i)


def spread(xs, scale, f):
    """'median [p10, p90]' of the seeds."""
    return (f"{f.format(quantile(xs, 0.5) * scale)} [{f.format(quantile(xs, 0.1) * scale)}, "
            f"{f.format(quantile(xs, 0.9) * scale)}]")


def rank(xs, v):
    """Seeds below v, of all."""
    return f"{sum(1 for x in xs if x < v)}/{len(xs)}"


def svg_lines(panels, width=720, panel_h=190):
    """panels: [(title, y label, [(name, colour, dashed, [y per minute])])]"""
    left, right, top, gap = 60, 150, 24, 46
    h = top + len(panels) * (panel_h + gap)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{h}" fill="white"/>']
    for k, (title, ylabel, series) in enumerate(panels):
        y0 = top + k * (panel_h + gap)
        n = max(len(s[3]) for s in series)
        ymax = max([v for s in series for v in s[3] if v is not None] + [1e-9]) * 1.1
        w = width - left - right
        x = lambda i: left + w * (i + 0.5) / n
        y = lambda v: y0 + panel_h - panel_h * v / ymax
        out.append(f'<text x="{left}" y="{y0 - 6}" font-weight="bold">{title}</text>')
        out.append(f'<rect x="{left}" y="{y0}" width="{w}" height="{panel_h}" fill="none" stroke="#888"/>')
        for q in range(5):
            v = ymax * q / 4
            out.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
            out.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        for i in range(0, n, 3):
            out.append(f'<text x="{x(i):.1f}" y="{y0 + panel_h + 14}" text-anchor="middle">{i}</text>')
        out.append(f'<text x="{left + w / 2}" y="{y0 + panel_h + 28}" text-anchor="middle">trace minute</text>')
        out.append(f'<text x="14" y="{y0 + panel_h / 2}" transform="rotate(-90 14 {y0 + panel_h / 2})" '
                   f'text-anchor="middle">{ylabel}</text>')
        for j, (name, colour, dashed, ys) in enumerate(series):
            pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(ys) if v is not None)
            dash = ' stroke-dasharray="5,3"' if dashed else ""
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}/>')
            ly = y0 + 12 + 16 * j
            out.append(f'<line x1="{left + w + 10}" x2="{left + w + 30}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{left + w + 34}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out)


lines = [
    "# Function graphs live vs the simulator",
    "",
    "Generated by `python3 benches/graphs-live/report.py` from the live runs of",
    "`benches/graphs-live/run.sh POLICY` (this directory; one run per policy, 21 trace minutes",
    "at one trace minute per minute, both apps at once on a pool of 1.4 vCPUs, replicas held",
    "to their vCPUs by the kernel; `<policy>-2` a repeat) and `pharos graph",
    "benches/graphs-live/sim.yaml` (seeds 1-30: sim is the mean over seeds, then the median",
    "and [10th, 90th percentile] of the seeds, and how many seeds are below the live value).",
    "Failed: requests dropped (a full queue, a queue timeout, or no answer in 30 s) over the",
    "requests sent; response: mean and p99 of the answered requests, end to end; vCPU-s: the",
    "apps' replicas' size x time held (starting ones included); CPU-s used: what the replicas'",
    "processes used (both apps, live only).",
    "",
    "| run | app | requests live | failed live | failed sim | diff (pp) | seeds: median [p10, p90] | below live | mean ms live | mean ms sim | diff | seeds: median [p10, p90] | below live | p99 ms live / sim | vCPU-s live / sim |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
extra = []
RUNS = [(p, name) for p in POLICIES for name in sorted(os.listdir(live_dir))
        if (name == p or (name.startswith(p + "-") and name[len(p) + 1:].isdigit()))
        and os.path.isdir(os.path.join(live_dir, name))]
for p, name in RUNS:
    d = os.path.join(live_dir, name)
    live, held_min, failed_min, p99_min, used_s, n_min = live_run(d)
    runs = sim_runs(p)
    sim = sim_apps(runs) if runs else None
    for a in APPS:
        l = live[a]
        s = sim[a] if sim else None
        fmt = lambda v, f="{:.0f}": "-" if v is None else f.format(v)
        if s:
            diff_pp = (l["failed"] - s["failed"]) * 100
            diff_mean = (l["mean_ms"] / s["mean_ms"] - 1) * 100 if l["mean_ms"] and s["mean_ms"] else None
            lines.append(
                f"| {name} | {a} | {l['requests']} | {l['failed'] * 100:.2f}% | {s['failed'] * 100:.2f}% | "
                f"{diff_pp:+.2f} | {spread(s['seeds_failed'], 100, '{:.2f}%')} | {rank(s['seeds_failed'], l['failed'])} | "
                f"{fmt(l['mean_ms'])} | {s['mean_ms']:.0f} | {fmt(diff_mean, '{:+.0f}%')} | "
                f"{spread(s['seeds_mean_ms'], 1, '{:.0f}')} | {rank(s['seeds_mean_ms'], l['mean_ms'] or 0)} | "
                f"{fmt(l['p99_ms'])} / {s['p99_ms']:.0f} | {l['cpu_s']:.0f} / {s['cpu_s']:.0f} |")
    extra.append(f"- {name}: the replicas used {used_s:.0f} CPU-s live (both apps); dropped by cause: "
                 + "; ".join(f"{a} {live[a]['dropped_by']}" for a in APPS))
    sim_held = [sum(r["result"]["minute_resource"][m] for r in runs) / len(runs) for m in range(n_min)] if runs else None
    sim_failed = [sum(r["result"]["minute_failed"][m] for r in runs) / len(runs) for m in range(n_min)] if runs else None
    panels = [
        ("vCPUs held (both apps)", "vCPUs",
         [("live", "#1f77b4", False, held_min)] + ([("sim (mean of seeds)", "#ff7f0e", True, sim_held)] if runs else [])),
        ("failed requests per minute", "requests",
         [("live", "#1f77b4", False, failed_min)] + ([("sim (mean of seeds)", "#ff7f0e", True, sim_failed)] if runs else [])),
        ("live p99 response per minute", "seconds",
         [(a, c, False, p99_min[a]) for a, c in zip(APPS, ["#2ca02c", "#d62728"])]),
    ]
    with open(os.path.join(live_dir, f"{name}.svg"), "w") as f:
        f.write(svg_lines(panels))
lines += ["", *extra, ""]
with open(os.path.join(live_dir, "summary.md"), "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines))
