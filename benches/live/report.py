#!/usr/bin/env python3
"""Compares the live runs (benches/live/run.sh) with the simulator on the same scenario
(examples/live/sim.yaml) and draws the per-minute plots.

    python3 benches/live/report.py LIVE_DIR SIM_DIR [OBSERVED_PREFIX]
    # e.g. docs/results/live out/live-sim out/observed  (out/observed-<policy> written by
    # benches/live/sim_observed.py)

For every policy with a LIVE_DIR/<policy>/ directory: the SLO violation rate (requests
over the SLO or dropped, over all requests of the three services) and the mean number of
ready replicas (time mean of their sum), live and simulated (each simulated seed), and
the differences. Writes LIVE_DIR/summary.md and LIVE_DIR/<policy>.svg.
"""
import csv
import json
import os
import sys
from collections import defaultdict

live_dir, sim_dir = sys.argv[1], sys.argv[2]
observed_prefix = sys.argv[3] if len(sys.argv) > 3 else None
SERVICES = ["svc-1", "svc-7", "svc-9"]


def live_run(d):
    minutes = {}  # service -> list of records
    for s in SERVICES:
        with open(os.path.join(d, f"load-{s}.json")) as f:
            minutes[s] = json.load(f)["minutes"]
    n_min = max(len(v) for v in minutes.values())
    # Ready replicas sampled every 2 s; the load started within a second of the first
    # sample.
    samples = defaultdict(list)  # service -> [(t, ready, target)]
    with open(os.path.join(d, "replicas.csv")) as f:
        for r in csv.DictReader(f):
            samples[r["service"]].append((float(r["t_s"]), int(r["ready"]), int(r["target"])))
    end = n_min * 60.0
    ready_per_min = {}
    for s in SERVICES:
        per = defaultdict(list)
        for t, ready, _ in samples[s]:
            if t < end:
                per[int(t // 60)].append(ready)
        ready_per_min[s] = [sum(per[m]) / len(per[m]) if per[m] else 0.0 for m in range(n_min)]
    return minutes, ready_per_min, samples


def sim_runs(policy, d=None):
    d = d or sim_dir
    runs = []
    if not os.path.isdir(d):
        return runs
    for name in sorted(os.listdir(d)):
        if name.startswith(f"timeline-{policy}-") and name.endswith(".csv"):
            minutes = defaultdict(list)
            with open(os.path.join(d, name)) as f:
                for r in csv.DictReader(f):
                    minutes[r["job"]].append(r)
            runs.append((name, minutes))
    return runs


def rate(viol, arr):
    return viol / arr if arr else 0.0


def live_totals(minutes, ready):
    arr = sum(r["arrivals"] for s in SERVICES for r in minutes[s])
    viol = sum(r["violations"] for s in SERVICES for r in minutes[s])
    n_min = len(ready[SERVICES[0]])
    mean_ready = sum(sum(ready[s]) for s in SERVICES) / n_min
    per = {
        s: (
            rate(sum(r["violations"] for r in minutes[s]), sum(r["arrivals"] for r in minutes[s])),
            sum(ready[s]) / n_min,
        )
        for s in SERVICES
    }
    return rate(viol, arr), mean_ready, per, arr


def sim_totals(m):
    arr = sum(int(r["arrivals"]) for s in SERVICES for r in m[s])
    viol = sum(int(r["violations"]) for s in SERVICES for r in m[s])
    n_min = len(m[SERVICES[0]])
    mean_ready = sum(float(r["mean_ready_replicas"]) for s in SERVICES for r in m[s]) / n_min
    per = {
        s: (
            rate(sum(int(r["violations"]) for r in m[s]), sum(int(r["arrivals"]) for r in m[s])),
            sum(float(r["mean_ready_replicas"]) for r in m[s]) / n_min,
        )
        for s in SERVICES
    }
    return rate(viol, arr), mean_ready, per, arr


# ----- SVG ---------------------------------------------------------------------------

def nice(v):
    """The smallest of 1, 2, 2.5, 5 x 10^k (divisible in four) at or above v."""
    if v <= 0:
        return 1
    k = 10 ** (len(str(int(v))) - 1) if v >= 1 else 10 ** -len(str(int(1 / v)))
    for m in (1, 2, 4, 5, 8, 10, 20):
        if m * k >= v:
            return m * k
    return v


def svg_plot(path, title, panels):
    """panels: list of (title, ylabel, series, ymax); series: list of (label, colour,
    dash, [(x, y)], step)."""
    w, ph, pad_l, pad_t = 900, 170, 60, 40
    h = pad_t + len(panels) * (ph + 45) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    pw = w - pad_l - 170
    for i, (ptitle, ylabel, series, ymax) in enumerate(panels):
        y0 = pad_t + i * (ph + 45) + 15
        xmax = max((x for _, _, _, pts, _ in series for x, _ in pts), default=1) or 1
        ymax = ymax or nice(max((y for _, _, _, pts, _ in series for _, y in pts), default=1))
        out.append(f'<text x="{pad_l}" y="{y0 - 4}" font-size="12">{ptitle}</text>')
        out.append(f'<rect x="{pad_l}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        for k in range(5):
            yv = ymax * k / 4
            yy = y0 + ph - ph * k / 4
            out.append(f'<line x1="{pad_l}" y1="{yy}" x2="{pad_l + pw}" y2="{yy}" stroke="#eee"/>')
            lab = f"{yv:.1%}" if ylabel == "%" else f"{yv:g}"
            out.append(f'<text x="{pad_l - 5}" y="{yy + 4}" text-anchor="end">{lab}</text>')
        for k in range(0, int(xmax) + 1, max(1, int(xmax) // 10)):
            xx = pad_l + pw * k / xmax
            out.append(f'<text x="{xx}" y="{y0 + ph + 14}" text-anchor="middle">{k}</text>')
        out.append(f'<text x="{pad_l + pw / 2}" y="{y0 + ph + 28}" text-anchor="middle">minute</text>')
        for j, (label, colour, dash, pts, step) in enumerate(series):
            coords = []
            for k, (x, y) in enumerate(pts):
                px = pad_l + pw * x / xmax
                py = y0 + ph - ph * min(y, ymax) / ymax
                if step and k > 0:
                    coords.append(f"{px:.1f},{coords[-1].split(',')[1]}")
                coords.append(f"{px:.1f},{py:.1f}")
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<polyline points="{" ".join(coords)}" fill="none" stroke="{colour}" stroke-width="1.5"{dash_attr}/>')
            ly = y0 + 14 + j * 16
            out.append(f'<line x1="{pad_l + pw + 10}" y1="{ly - 4}" x2="{pad_l + pw + 35}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
            out.append(f'<text x="{pad_l + pw + 40}" y="{ly}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


# ----- report ------------------------------------------------------------------------

# The experiment the simulated runs came from (examples/live/<name>.yaml).
with open(os.path.join(sim_dir, "results.json")) as f:
    sim_yaml = {"live-sim": "sim.yaml", "live-learned": "learned.yaml"}.get(
        json.load(f)["experiment"], "sim.yaml")
lines = ["# Live inference vs the simulator", "",
         f"Generated by `python3 benches/live/report.py {live_dir} <sim out>` from the live runs of",
         f"`benches/live/run.sh` (this directory) and `pharos simulate examples/live/{sim_yaml}` (3 seeds).",
         "Violation rate: requests over the p99 SLO (150 ms) or dropped, over all requests of the three",
         "services. Replicas: time mean of the sum of ready replicas.", "",
         "| policy | requests live | violations live | violations sim (seeds) | diff (pp) | replicas live | replicas sim (seeds) | diff |",
         "|---|---|---|---|---|---|---|---|"]
observed_lines = []
per_service = []
for policy in sorted(os.listdir(live_dir)):
    d = os.path.join(live_dir, policy)
    if not os.path.isfile(os.path.join(d, "replicas.csv")):
        continue
    minutes, ready, samples = live_run(d)
    lv, lr, lper, larr = live_totals(minutes, ready)
    sims = sim_runs(policy)
    if not sims:
        continue
    st = [sim_totals(m) for _, m in sims]
    sv = sum(x[0] for x in st) / len(st)
    sr = sum(x[1] for x in st) / len(st)
    lines.append(
        f"| {policy} | {larr} | {lv:.2%} | {sv:.2%} ({', '.join(f'{x[0]:.2%}' for x in st)}) | "
        f"{(lv - sv) * 100:+.2f} | {lr:.2f} | {sr:.2f} ({', '.join(f'{x[1]:.2f}' for x in st)}) | "
        f"{(lr - sr) / sr:+.1%} |")
    if observed_prefix:
        ot = [sim_totals(m) for _, m in sim_runs(policy, f"{observed_prefix}-{policy}")]
        if ot:
            ov = sum(x[0] for x in ot) / len(ot)
            orr = sum(x[1] for x in ot) / len(ot)
            observed_lines.append(
                f"| {policy} | {lv:.2%} | {ov:.2%} ({', '.join(f'{x[0]:.2%}' for x in ot)}) | "
                f"{(lv - ov) * 100:+.2f} | {lr:.2f} | {orr:.2f} | {(lr - orr) / orr:+.1%} |")
    for s in SERVICES:
        sv_s = sum(x[2][s][0] for x in st) / len(st)
        sr_s = sum(x[2][s][1] for x in st) / len(st)
        per_service.append(f"| {policy} | {s} | {lper[s][0]:.2%} | {sv_s:.2%} | {lper[s][1]:.2f} | {sr_s:.2f} |")
    # Plots: per service, replicas (live samples, simulated seed 1 per minute) and the
    # per-minute violation rate (live, simulated mean of the seeds).
    panels = []
    colours = {"svc-1": "#1f77b4", "svc-7": "#d62728", "svc-9": "#2ca02c"}
    rep_series, viol_series = [], []
    for s in SERVICES:
        c = colours[s]
        rep_series.append((f"{s} live", c, "", [(t / 60, r) for t, r, _ in samples[s] if t <= len(ready[s]) * 60], True))
        m1 = sims[0][1][s]
        rep_series.append((f"{s} sim", c, "4 3", [(i + 0.5, float(r["mean_ready_replicas"])) for i, r in enumerate(m1)], False))
        viol_series.append((f"{s} live", c, "", [(r["minute"] + 0.5, rate(r["violations"], r["arrivals"])) for r in minutes[s]], False))
        n = len(sims[0][1][s])
        mean = [sum(rate(int(m[s][i]["violations"]), int(m[s][i]["arrivals"])) for _, m in sims) / len(sims) for i in range(n)]
        viol_series.append((f"{s} sim", c, "4 3", [(i + 0.5, v) for i, v in enumerate(mean)], False))
    arr_series = [(s, colours[s], "", [(r["minute"] + 0.5, r["arrivals"] / 60) for r in minutes[s]], False) for s in SERVICES]
    panels.append(("requests per second (live)", "", arr_series, None))
    panels.append(("ready replicas (live: sampled every 2 s; sim: seed 1, mean per minute)", "", rep_series, 5))
    panels.append(("SLO violation rate per minute (sim: mean of 3 seeds)", "%", viol_series, None))
    svg_plot(os.path.join(live_dir, f"{policy}.svg"), f"{policy}: live vs simulated", panels)

if observed_lines:
    lines += ["", "The simulator given each service's mean service time as the router measured it in the",
              "live run (`benches/live/sim_observed.py`: the idle measurement scaled per service):", "",
              "| policy | violations live | sim, observed service time (seeds) | diff (pp) | replicas live | sim | diff |",
              "|---|---|---|---|---|---|---|"] + observed_lines
lines += ["", "Per service:", "", "| policy | service | violations live | sim | replicas live | sim |", "|---|---|---|---|---|---|"]
lines += per_service
with open(os.path.join(live_dir, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
