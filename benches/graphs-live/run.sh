#!/usr/bin/env bash
# The live function-graph run: a pharos server on this machine with a pool of 1.4 vCPUs,
# replicas held to their vCPUs by the kernel (`local: {cpu_limits: on}`, needs root or a
# delegated cgroup hierarchy), the two graphs of this directory (diamond.yaml,
# fanout.yaml: replicas of pharos-replica doing real work), and one `pharos load` per
# graph replaying trace.csv (21 minutes, one trace minute per minute) against its entry
# URL, under one graph autoscaler. Every 2 s the functions' replicas are sampled.
#
#   benches/graphs-live/run.sh POLICY OUT_DIR [MINUTES]
#
# With PARAMS='{...}' the policy's parameters (a YAML flow map). Writes
# OUT_DIR/load-<graph>.json (per-minute records and the summary), replicas.csv (every
# function's replicas, size and queue every 2 s, and the CPU time its replicas used),
# graphs.json and services.json (the end state, events included), cold-starts.txt and
# server.log. Build first: cargo build --release -p pharos -p pharos-workloads.
set -euo pipefail
policy=${1:?policy}
out=${2:?out dir}
minutes=${3:-21}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${PHAROS_BIN:-$root/target/release}
mkdir -p "$out"
out=$(cd "$out" && pwd)
port=${PHAROS_LIVE_PORT:-18091}
params=${PARAMS:-"{}"}
export PATH="$bin:$PATH"
. "$root/benches/lib/server.sh"
sampler=
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2> /dev/null || true
  for g in diamond fanout; do "$bin/pharos" delete graph "$g" > /dev/null 2>&1 || true; done
  stop_server
}
trap cleanup EXIT
start_server "$port" "$out" "capacity: { cpus: 1.4 }
graph_autoscaler: { policy: $policy, params: $params }
local: { cpu_limits: on }"
token=$(cat "$data/data/admin-token")
for g in diamond fanout; do "$bin/pharos" apply -f "$here/$g.yaml"; done
# Every function ready before the load starts (the simulator starts them ready).
for _ in $(seq 300); do
  if curl -sf -H "Authorization: Bearer $token" "$PHAROS_URL/v1/graphs" | python3 -c '
import json, sys
fs = [f for g in json.load(sys.stdin)["graphs"] for f in g["functions"]]
sys.exit(0 if len(fs) == 10 and all((f["ready_replicas"] or 0) >= 1 for f in fs) else 1)'; then
    break
  fi
  sleep 0.5
done
python3 "$root/benches/lib/sample.py" graphs "$PHAROS_URL" "$token" "$out/replicas.csv" &
sampler=$!
pids=()
seed=1
for g in diamond fanout; do
  url=$("$bin/pharos" get graph "$g" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
  "$bin/pharos" load --trace "$here/trace.csv" --job "$g" --minutes "0:$minutes" \
    --url "$url/infer" --seed "$seed" --timeout-s 30 \
    --out "$out/load-$g.json" > "$out/load-$g.txt" 2>&1 &
  pids+=($!)
  seed=$((seed + 1))
done
for p in "${pids[@]}"; do wait "$p"; done
kill "$sampler"
sampler=
curl -sf -H "Authorization: Bearer $token" "$PHAROS_URL/v1/graphs" > "$out/graphs.json"
curl -sf -H "Authorization: Bearer $token" "$PHAROS_URL/v1/services" > "$out/services.json"
python3 - "$out/services.json" > "$out/cold-starts.txt" <<'PY'
import json, sys
cs = [s["cold_start_s"] for s in json.load(open(sys.argv[1]))["services"] if s.get("cold_start_s")]
n = sum(c["count"] for c in cs)
if n:
    mean = sum(c["count"] * c["mean"] for c in cs if c["mean"] is not None) / n
    print(f"{n} cold starts (replica start to ready), mean {mean:.2f} s")
PY
tail -n 2 "$out"/load-*.txt
