# Shared by the live benches' run.sh (sourced): a pharos server of its own on this
# machine, in a fresh data directory.
#
#   start_server PORT OUT_DIR CONFIG   # CONFIG: the configuration past listen and data_dir
#   stop_server                        # after the run's own clean-up
#
# Needs $bin (the directory of the pharos binaries). Sets $data (the temporary
# directory), $server (its pid), and exports PHAROS_URL and PHAROS_DATA_DIR for the CLI.
data=
server=
start_server() {
  local port=$1 out=$2 config=$3
  data=$(mktemp -d)
  chmod 755 "$data"
  printf 'listen: 127.0.0.1:%s\ndata_dir: %s/data\n%s\n' "$port" "$data" "$config" > "$data/server.yaml"
  export PHAROS_URL=http://127.0.0.1:$port PHAROS_DATA_DIR=$data/data
  "$bin/pharos" server --config "$data/server.yaml" > "$out/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf "$PHAROS_URL/healthz" > /dev/null && return 0; sleep 0.1; done
  echo "the server did not answer: $out/server.log" >&2
  return 1
}

stop_server() {
  [ -n "$server" ] || return 0
  sleep 3
  kill "$server" 2> /dev/null || true
  wait "$server" 2> /dev/null || true
  [ -z "$data" ] || rm -rf "$data"
}
