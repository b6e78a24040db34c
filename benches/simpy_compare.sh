#!/usr/bin/env bash
# Speed comparison: pharos against a SimPy model with the same semantics
# (benches/simpy_reference.py), on the faro-10jobs trace, day 11, under a static
# allocation (fairshare at 32 vCPUs = 3 replicas per job), seed 42.
#
# Run from the repository root after `cargo build --release`:
#
#   benches/simpy_compare.sh
#
# SIMPY_MINUTES=N simulates only the first N minutes with SimPy (default 360, the whole
# trace); pharos always runs the whole trace, and the speed ratio is then taken from the
# requests per second of each engine.
set -euo pipefail

ROOT=$(pwd)
PHAROS=./target/release/pharos
EXPERIMENT=examples/faro-10jobs.yaml
CSV=data/faro-10jobs/requests_per_minute.csv
VENV=benches/.venv
SIMPY_MINUTES=${SIMPY_MINUTES:-360}

if [[ ! -f $EXPERIMENT || ! -f benches/simpy_reference.py ]]; then
    echo "error: run this script from the repository root" >&2
    exit 2
fi
if [[ ! -x $PHAROS ]]; then
    echo "error: $PHAROS not found; build it first with: cargo build --release" >&2
    exit 2
fi
if ! [[ $SIMPY_MINUTES =~ ^[0-9]+$ ]] || (( SIMPY_MINUTES < 1 || SIMPY_MINUTES > 360 )); then
    echo "error: SIMPY_MINUTES must be a whole number from 1 to 360 (got '$SIMPY_MINUTES')" >&2
    exit 2
fi

if [[ ! -x $VENV/bin/python ]]; then
    echo "creating $VENV ..." >&2
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import simpy' 2>/dev/null; then
    echo "installing simpy into $VENV ..." >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check simpy
fi
PY=$VENV/bin/python

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

PHAROS_REPEATS=5
echo "pharos: fairshare @ 32 vCPUs, day 11, 360 minutes, $PHAROS_REPEATS times ..." >&2
for k in $(seq 1 $PHAROS_REPEATS); do
    if ! "$PHAROS" simulate "$EXPERIMENT" --policy fairshare --cpus 32 --seed 42 --json \
            --threads 1 --out "$TMP/pharos-out" > "$TMP/pharos-$k.json"; then
        echo "error: pharos failed" >&2
        exit 1
    fi
done

echo "simpy: 3 replicas per job, day 11, $SIMPY_MINUTES minutes ..." >&2
if ! "$PY" benches/simpy_reference.py --csv "$CSV" --day 11 --replicas 3 --seed 42 \
        --minutes "$SIMPY_MINUTES" > "$TMP/simpy.json"; then
    echo "error: the SimPy model failed" >&2
    exit 1
fi

"$PY" - "$TMP/simpy.json" "$SIMPY_MINUTES" "$TMP"/pharos-*.json <<'EOF'
import json
import statistics
import sys

simpy = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
minutes = int(sys.argv[2])
runs = [json.load(open(f)) for f in sys.argv[3:]]
if any(len(r) != 1 for r in runs):
    sys.exit("error: expected one pharos run per invocation")
p = dict(runs[0][0])
if any(r[0]["slo_violation_rate"] != p["slo_violation_rate"] for r in runs):
    sys.exit("error: pharos gave different results for the same seed")
walls = [r[0]["sim_wall_s"] for r in runs]
p["sim_wall_s"] = statistics.median(walls)
print(f"pharos wall times over {len(walls)} runs: " + ", ".join(f"{w:.3f}" for w in walls)
      + f" s (median {p['sim_wall_s']:.3f} s, the one compared)")

rows = [
    ("pharos", p["requests"], p["dropped"], p["slo_violation_rate"], p["sim_wall_s"], 360),
    ("simpy", simpy["requests"], simpy["dropped"], simpy["slo_violation_rate"], simpy["wall_s"],
     minutes),
]
print(f"{'engine':<8} {'minutes':>7} {'requests':>10} {'dropped':>8} {'violation':>9} "
      f"{'wall s':>9} {'requests/s':>12}")
for name, req, drop, viol, wall, mins in rows:
    rate = req / max(wall, 1e-9)
    print(f"{name:<8} {mins:>7} {req:>10} {drop:>8} {viol * 100:>8.2f}% {wall:>9.3f} {rate:>12,.0f}")

p_rate = p["requests"] / max(p["sim_wall_s"], 1e-9)
s_rate = simpy["requests"] / max(simpy["wall_s"], 1e-9)
print()
if minutes == 360:
    ratio = simpy["wall_s"] / max(p["sim_wall_s"], 1e-9)
    print(f"speed ratio (SimPy wall / pharos wall, same 360 minutes): {ratio:,.0f}x")
    print(f"violation rate difference (SimPy - pharos): "
          f"{(simpy['slo_violation_rate'] - p['slo_violation_rate']) * 100:+.2f} points")
else:
    ratio = p_rate / max(s_rate, 1e-9)
    print(f"speed ratio (throughput: pharos requests/s / SimPy requests/s): {ratio:,.0f}x")
    print(f"note: SimPy ran {minutes} of 360 minutes, so the ratio is taken from throughput;")
    print("      the wall times and violation rates are not directly comparable")
EOF
