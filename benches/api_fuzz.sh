#!/usr/bin/env bash
# A schema-driven fuzz run of the control plane's API: schemathesis (from PyPI, into
# benches/.venv) generates requests from /openapi.json - valid and invalid - against a
# fresh `pharos server`, and checks every response (no 5xx, responses as documented).
# The server's only queue has a CPU quota of 0, so the jobs the fuzzer submits are
# accepted and stored but never run.
#
#   cargo build --release -p pharos && benches/api_fuzz.sh [MAX_EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-50}"
VENV=benches/.venv
[ -x "$VENV/bin/st" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q schemathesis; }
DIR="$(mktemp -d)"
PORT=18391
TOKEN="fuzz-admin-token-$(date +%s)"
cat > "$DIR/config.yaml" <<YAML
listen: 127.0.0.1:$PORT
data_dir: $DIR/data
queues:
  - name: default
    quota: {cpu: 0}
YAML
PHAROS_LOG=warn PHAROS_ADMIN_TOKEN="$TOKEN" target/release/pharos server --config "$DIR/config.yaml" 2> "$DIR/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
set +e
(cd "$DIR" && "$OLDPWD/$VENV/bin/st" run "http://127.0.0.1:$PORT/openapi.json" \
    -H "Authorization: Bearer $TOKEN" -n "$N" --checks all --seed 1)
RC=$?
set -e
echo "server 5xx responses: $(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^pharos_http_server_errors_total/ {print $2}')"
echo "server requests:      $(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^pharos_http_requests_total/ {print $2}')"
grep -c '"level":"ERROR"\| ERROR ' "$DIR/server.log" | sed 's/^/server error log lines: /' || true
exit $RC
