#!/usr/bin/env bash
# The live graph autoscaler's decision time on a 200-function app: a real `pharos
# server` runs a random layered graph of 200 functions (the shape graph_bench uses:
# each function routes 90% of its output to one or two of the next four, service rates
# 5-50 requests/s), the fluid autoscaler deciding every 2 s, while a client sends 20
# requests/s to the entry. The server's own measure (`autoscaler.decide_s` in
# `GET /v1/graphs/NAME`: policy call and fit, on the decision thread) is sampled after
# DURATION seconds. Capacity is kept small (4 vCPUs, replicas of 0.25) so that this
# machine runs the replicas the plans ask for.
#
#   docs/results/graph-live-bench.sh [FUNCTIONS] [DURATION_S]
set -euo pipefail
N="${1:-200}"
DURATION="${2:-90}"
BIN="$(pwd)/target/release"
W="$(mktemp -d)"
cleanup() {
    # Replicas outlive their server (the next start adopts them): the graph goes first,
    # and the server is stopped once its functions' replicas are.
    if [ -n "${API:-}" ]; then
        curl -s -X DELETE -H "Authorization: Bearer graph-bench-admin-token" "$API/v1/graphs/bench" > /dev/null
        for _ in $(seq 120); do
            curl -sf -H "Authorization: Bearer graph-bench-admin-token" "$API/v1/services" \
                | python3 -c 'import json,sys; sys.exit(1 if json.load(sys.stdin)["services"] else 0)' \
                && break
            sleep 0.5
        done
    fi
    kill $(cat "$W/server.pid" 2>/dev/null) 2>/dev/null
    pkill -f "$W/" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$W/config.yaml" <<EOF
listen: 127.0.0.1:$PORT
data_dir: $W/data
capacity: { cpus: 4 }
graph_autoscaler: { policy: fluid, params: { interval_s: 2 } }
EOF
python3 - "$N" "$BIN/pharos-replica" > "$W/graph.yaml" <<'EOF'
import random, sys
n, replica = int(sys.argv[1]), sys.argv[2]
rng = random.Random(n)
print("kind: graph\nname: bench\nfunctions:")
for j in range(n):
    mu = 5 + 45 * rng.random()
    later = n - j - 1
    routes = []
    if later > 0:
        a = j + 1 + int(rng.random() * min(later, 4))
        if later > 1 and rng.random() < 0.5:
            b = j + 1 + int(rng.random() * min(later, 4))
            routes = [(a, 0.5), (b, 0.4)] if b != a else [(a, 0.9)]
        else:
            routes = [(a, 0.9)]
    print(f"  - name: f{j}")
    print(f"    command: ['{replica}', --port, $PORT, --service-ms, '{1000 / mu:.1f}']")
    print(f"    processing_time_s: {1 / mu:.4f}")
    print("    cpus: 0.25\n    min_replicas: 0\n    max_replicas: 100\n    timeout_s: 5")
    if routes:
        print("    routes: [" + ", ".join(f"{{to: f{k}, p: {p}}}" for k, p in routes) + "]")
EOF
PHAROS_ADMIN_TOKEN=graph-bench-admin-token "$BIN/pharos" server --config "$W/config.yaml" 2> "$W/server.log" &
echo $! > "$W/server.pid"
API="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$API/healthz" >/dev/null && break; sleep 0.1; done
curl -sS --fail-with-body -X PUT -H "Authorization: Bearer graph-bench-admin-token" -H "content-type: application/yaml" \
    --data-binary @"$W/graph.yaml" "$API/v1/graphs/bench" >/dev/null
URL=$(curl -sf -H "Authorization: Bearer graph-bench-admin-token" "$API/v1/graphs/bench" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
# 20 requests/s at the entry, open loop, for the whole run.
python3 - "$URL/infer" "$DURATION" <<'EOF' &
import sys, threading, time, urllib.request
url, end = sys.argv[1], time.time() + float(sys.argv[2])
def one():
    try:
        urllib.request.urlopen(url, timeout=10).read()
    except Exception:
        pass
while time.time() < end:
    threading.Thread(target=one, daemon=True).start()
    time.sleep(0.05)
EOF
sleep "$DURATION"
curl -sf -H "Authorization: Bearer graph-bench-admin-token" "$API/v1/graphs/bench" > "$W/status.json"
python3 - "$W/status.json" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
a = v["autoscaler"]
d = a["decide_s"]
ready = sum(f["ready_replicas"] or 0 for f in v["functions"])
print("functions %d  policy %s  decisions %d  mean_s %.3f  max_s %.3f  latest_s %.3f "
      "(of the latest %d)  deciding %s  ready replicas %d  entry arrivals %d" % (
          len(v["functions"]), a["policy"], a["calls"], d["mean"], d["max"], d["latest"],
          d["count"], a["deciding"], ready, v["counters"]["arrivals"]))
EOF
