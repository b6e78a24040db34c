#!/usr/bin/env bash
# Does a background refit stall the services loop? A pharos server with N services
# (default 100; replicas of pharos-replica, at most 2 running on 1 vCPU), each given
# DAYS days of history (job i mod 10 of the Faro trace, days 1..DAYS, 360-minute days)
# through `pharos history import`; the SLO-utility autoscaler's forecaster
# (ensemble+cal) is then fitted in the background on all of them. Reports the fit's
# time (from its event) and the services loop's period (pass start to pass start;
# tick 200 ms) over the passes around it, from GET /v1/autoscaler.
#
#   benches/forecast/refit_stall.sh [N] [DAYS]
#
# Build first: cargo build --release -p pharos -p pharos-workloads --bins
set -euo pipefail
n=${1:-100}
days=${2:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PHAROS_BIN:-$root/target/release}
data=$(mktemp -d)
port=${PHAROS_BENCH_PORT:-18190}
cat > "$data/server.yaml" <<YAML
listen: 127.0.0.1:$port
data_dir: $data/data
capacity: { cpus: 1 }
autoscaler: { policy: faro-fairsum }
forecast: { day_minutes: 360, fit_days: $days }
YAML
export PHAROS_URL=http://127.0.0.1:$port PHAROS_DATA_DIR=$data/data
"$bin/pharos" server --config "$data/server.yaml" > "$data/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2> /dev/null || true
  wait "$server" 2> /dev/null || true
  pkill -9 -f "$data" 2> /dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "$PHAROS_URL/healthz" > /dev/null && break; sleep 0.1; done
token=$(cat "$data/data/admin-token")
for i in $(seq 0 $((n - 1))); do
  cat > "$data/svc.yaml" <<YAML
name: svc-$i
command: [$bin/pharos-replica, --port, \$PORT, --service-ms, "5"]
cpus: 0.5
slo: { latency_s: 0.15 }
processing_time_s: 0.005
min_replicas: 0
max_replicas: 1
initial_replicas: 0
YAML
  "$bin/pharos" apply -f "$data/svc.yaml" > /dev/null
done
t0=$(date +%s.%N)
for i in $(seq 0 $((n - 1))); do
  "$bin/pharos" history import --service "svc-$i" --job $((i % 10)) --days "1-$days" \
    "$root/data/faro-10jobs/requests_per_minute.csv" > /dev/null
done
t1=$(date +%s.%N)
echo "imported $days days of history into each of $n services in $(echo "$t1 - $t0" | bc) s"
for _ in $(seq 1800); do
  if "$bin/pharos" get service svc-0 --json > /dev/null 2>&1 &&
     curl -sf -H "Authorization: Bearer $token" "$PHAROS_URL/v1/services/svc-0/events" | grep -q "fitted on .* of $n service"; then
    break
  fi
  sleep 1
done
curl -sf -H "Authorization: Bearer $token" "$PHAROS_URL/v1/services/svc-0/events" |
  python3 -c 'import json,sys; [print(e["message"]) for e in json.load(sys.stdin)["events"] if e["kind"].startswith("forecast")]'
curl -sf -H "Authorization: Bearer $token" "$PHAROS_URL/v1/autoscaler" |
  python3 -c 'import json,sys; a=json.load(sys.stdin); print("services loop period over its last", a["loop_period_s"]["count"], "passes:", json.dumps(a["loop_period_s"]), "; policy calls:", a["calls"])'
