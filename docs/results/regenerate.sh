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
cargo run --release --quiet -p pharos-policy --example alloc_bench | tee docs/results/alloc-bench.txt
