#!/usr/bin/env bash
# Regenerates everything under docs/results from the committed examples.
# Run from the repository root: docs/results/regenerate.sh
set -euo pipefail
cargo build --release --quiet
SEEDS="--seed 42 --seed 43 --seed 44 --seed 45 --seed 46"
./target/release/pharos simulate examples/faro-10jobs.yaml $SEEDS --out docs/results/faro-10jobs
./target/release/pharos simulate examples/faro-10jobs.yaml $SEEDS --over-capacity wait \
    --out docs/results/faro-10jobs-wait
./target/release/pharos simulate examples/faro-ablation.yaml --out docs/results/faro-ablation
./target/release/pharos simulate examples/faro-frontier.yaml --seed 42 --seed 43 --seed 44 \
    --out docs/results/faro-frontier
./target/release/pharos simulate examples/faro-20jobs.yaml --seed 42 --seed 43 --seed 44 \
    --out docs/results/faro-20jobs
cargo run --release --quiet -p pharos-policy --example alloc_bench | tee docs/results/alloc-bench.txt
# Forecasting: the forecasters scored on day 11, their speed, and what each is worth
# to Faro-FairSum.
mkdir -p docs/results/forecasting
./target/release/pharos forecast eval --trace data/faro-10jobs/requests_per_minute.csv \
    --train-days 1-10 --test-days 11 --context-min 15 --horizon-min 7 \
    2>/dev/null | tee docs/results/forecasting/eval.txt
./target/release/pharos forecast eval --trace data/faro-10jobs/requests_per_minute.csv \
    --train-days 1-10 --test-days 11 --context-min 15 --horizon-min 7 --json \
    > docs/results/forecasting/eval.json
cargo run --release --quiet -p pharos-forecast --example forecast_bench \
    | tee docs/results/forecasting/bench.txt
cargo run --release --quiet -p pharos-forecast --example fit_scale -- ensemble+cal 14 10 100 1000 \
    | tee docs/results/forecasting/fit-scale.txt
./target/release/pharos simulate examples/faro-forecasters.yaml --out docs/results/faro-forecasters
# Fluid models: the exact SCLP solver and the discretised LP on random networks (the LP
# runs take minutes; see the results README).
cargo run --release --quiet -p pharos-fluid --example exact_bench -- --seeds 12 20 \
    > docs/results/fluid-exact.txt
# Function graphs: the fluid autoscaler against HPA and KPA on five example graphs, and
# the fluid autoscaler's decision time by graph size.
for g in chain fanout fanout-join diamond two-apps; do
    ./target/release/pharos graph examples/graphs/$g.yaml --out docs/results/graphs/$g
done
cargo run --release --quiet -p pharos-experiment --example graph_bench \
    | tee docs/results/graph-bench.txt
{ cargo run --release --quiet -p pharos-experiment --example graph_bench -- --overloaded 10 50 100 200
  echo; cargo run --release --quiet -p pharos-experiment --example graph_bench -- --overloaded --unbounded 10 50 100 200
} | tee docs/results/graph-bench-overloaded.txt
docs/results/graph-live-bench.sh 200 120 | tee -a docs/results/graph-live-bench.txt
# GPU replicas serving one request at a time against batching ones, on the same load.
for b in one-at-a-time batching; do
    ./target/release/pharos simulate examples/gpu-batching/$b.yaml --out docs/results/gpu-batching/$b
done
# Services and training jobs on one GPU cluster, static and shared.
./target/release/pharos simulate examples/shared-cluster.yaml --out docs/results/shared-cluster
# Training schedulers on the Philly-derived traces.
for t in 0e4a51 2869ce; do
    ./target/release/pharos simulate examples/training/philly-$t.yaml --out docs/results/training/philly-$t
done
cargo run --release --quiet -p pharos-policy --example sched_bench | tee docs/results/sched-bench.txt
