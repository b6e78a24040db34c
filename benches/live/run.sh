#!/usr/bin/env bash
# The live inference run: a pharos server on this machine with 5 vCPUs for services,
# the three services of examples/live (replicas of pharos-replica), and one
# `pharos load` per service replaying examples/live/trace.csv (21 minutes), under one
# autoscaling policy. Every 2 s the services' replicas are sampled.
#
#   benches/live/run.sh POLICY OUT_DIR [MINUTES]
#
# With PARAMS='{...}' the policy's parameters (a YAML flow map). With
# HISTORY=examples/live/days.csv each service first imports days 1-10 of that file as
# its load history (60-minute days ending at the minute the load starts; the server
# fits its forecaster on them), the scenario of examples/live/learned.yaml.
#
# Writes OUT_DIR/load-svc-*.json (per-minute records as the simulator's), replicas.csv
# (time, service, ready, starting, target), services.json (the end state with events
# and cold starts) and server.log. Build first: cargo build --release -p pharos -p pharos-workloads.
set -euo pipefail
policy=${1:?policy}
out=${2:?out dir}
minutes=${3:-21}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PHAROS_BIN:-$root/target/release}
mkdir -p "$out"
out=$(cd "$out" && pwd)
port=${PHAROS_LIVE_PORT:-18090}
params=${PARAMS:-"{}"}
config="capacity: { cpus: 5 }
autoscaler: { policy: $policy, params: $params }"
if [ -n "${HISTORY:-}" ]; then
  config="$config
forecast: { day_minutes: 60, fit_days: 10 }"
fi
. "$root/benches/lib/server.sh"
cleanup() {
  for s in svc-1 svc-7 svc-9; do "$bin/pharos" delete service "$s" > /dev/null 2>&1 || true; done
  stop_server
}
trap cleanup EXIT
start_server "$port" "$out" "$config"
if [ -n "${HISTORY:-}" ]; then
  # Start on a minute boundary: the services' minutes are the server's unix minutes, and
  # the imported days end at the minute the load starts in.
  sleep $((60 - $(date +%s) % 60))
fi
for s in 1 7 9; do "$bin/pharos" apply -f "$root/examples/live/svc-$s.yaml"; done
if [ -n "${HISTORY:-}" ]; then
  start=$(($(date +%s) / 60 - 600))
  for s in 1 7 9; do
    "$bin/pharos" history import --service "svc-$s" --job "svc-$s" --days 1-10 \
      --start "$start" "$root/$HISTORY"
  done
fi
sleep 3
python3 "$root/benches/lib/sample.py" services "$PHAROS_URL" "$(cat "$data/data/admin-token")" \
  "$out/replicas.csv" &
sampler=$!
pids=()
for s in 1 7 9; do
  url=$("$bin/pharos" get service "svc-$s" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
  "$bin/pharos" load --trace "$root/examples/live/trace.csv" --job "svc-$s" \
    --minutes "0:$minutes" --url "$url/infer" --slo-ms 150 --percentile 99 --seed "$s" \
    --out "$out/load-svc-$s.json" > "$out/load-svc-$s.txt" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
kill "$sampler"
curl -sf -H "Authorization: Bearer $(cat "$data/data/admin-token")" "$PHAROS_URL/v1/services" > "$out/services.json"
for s in 1 7 9; do
  "$bin/pharos" get service "svc-$s" --json > "$out/service-svc-$s.json"
done
tail -n 1 "$out"/load-svc-*.txt
