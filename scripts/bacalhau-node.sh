#!/usr/bin/env bash
# A private single-node Bacalhau network on loopback for the integration test:
# one `bacalhau serve` process that is orchestrator + compute node, wasm engine,
# local publisher, and read-only allow-listed host paths for model directories.
#
#   scripts/bacalhau-node.sh start    # build if needed, start, wait until ready, print env
#   scripts/bacalhau-node.sh env      # print the client env of the running node
#   scripts/bacalhau-node.sh status   # exit 0 if the node runs and answers
#   scripts/bacalhau-node.sh stop     # stop it (SIGTERM, then SIGKILL after 20 s)
#   scripts/bacalhau-node.sh logs     # print the node's log
#
# Use it as:
#   eval "$(scripts/bacalhau-node.sh start)"
#   J=$("$BACALHAU" wasm run file://$PWD/dist/sd.wasm:/app/sd.wasm --memory 4GiB \
#         -i file://$PWD/fixtures/tiny:/models -o outputs:/outputs --wait=false --id-only \
#         -- --prompt "a red cube" --seed 1 --steps 2)
#   "$BACALHAU" job describe "$J" --output json   # .Job.State.StateType; exit code in
#                                                 # .Executions.Items[].RunOutput.ExitCode
#   mkdir out && "$BACALHAU" job get "$J" --output-dir out   # out/{exitCode,stdout,stderr,outputs/}
#   scripts/bacalhau-node.sh stop
# Pass the module as file://… (an allow-listed path), not as a bare local path: a bare path
# is embedded in the job ("inline"), and a job over NATS's 1 MB message limit (sd.wasm is
# ~9.7 MB) is never delivered to the compute node; it stays Pending and blocks every later
# job on that node until the node is restarted.
#
# The printed env: BACALHAU (the binary), BACALHAU_API_HOST, BACALHAU_API_PORT,
# BACALHAU_DIR (a client data dir holding a config.yaml that points at the node and
# turns off update checks and analytics), BACALHAU_NODE_DIR.
#
# Settings (environment):
#   BACALHAU_NODE_DIR     state dir (default ${TMPDIR:-/tmp}/sd-wasm-bacalhau-$UID); wiped on start
#   BACALHAU_ALLOW_PATHS  colon-separated host paths a job may mount with file://…
#                         (read-only; doublestar globs, `/dir/**` allows everything under dir).
#                         Default: the repo (/…/**) and $HOME/.cache/sd-wasm (/…/**).
#   BACALHAU_BIN          binary to use (default: the one scripts/build-bacalhau.sh builds)
#   BACALHAU_NODE_TIMEOUT seconds to wait for readiness (default 90)
#   BACALHAU_LOG_LEVEL    node log level (default info)
#   BACALHAU_COMPUTE_NODES number of compute nodes (default 1). A batch job places each of
#                         its Count executions on a different node, so `Count: 3` needs 3
#                         (else it fails at once: "not enough nodes to run job"). Node 0 is
#                         orchestrator+compute; the others are compute-only processes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_DIR="${BACALHAU_NODE_DIR:-${TMPDIR:-/tmp}/sd-wasm-bacalhau-$(id -u)}"
PID_FILE="$NODE_DIR/node.pid"
ENV_FILE="$NODE_DIR/env"
LOG_FILE="$NODE_DIR/node.log"

log() { echo "bacalhau-node: $*" >&2; }

# A free TCP port on 127.0.0.1 (the kernel picks it; there is a small race until bacalhau binds it).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid; pid="$(cat "$PID_FILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# Exit 0 when the API answers and a compute node is connected.
ready() {
  local want; want="$(cat "$NODE_DIR/compute-nodes" 2>/dev/null || echo 1)"
  # shellcheck disable=SC1090
  ( set +u; . "$ENV_FILE"
    "$BACALHAU" agent alive >/dev/null 2>&1 || exit 1
    "$BACALHAU" node list --output json 2>/dev/null | python3 -c '
import json, sys
nodes = json.load(sys.stdin)
n = sum(1 for n in nodes if n.get("Info", {}).get("NodeType") == "Compute"
        and n.get("ConnectionState", {}).get("Status") == "CONNECTED")
sys.exit(0 if n >= int(sys.argv[1]) else 1)' "$want"
  )
}

# The config every node shares (keys: pkg/config/types, v1.9.3): API port $1, the
# orchestrator's NATS port $2, local publisher port $3, allow-listed paths (YAML list) $4.
node_config() {
  cat <<EOF
NameProvider: uuid
DisableAnalytics: true
UpdateConfig:
  Interval: 0s
Logging:
  Level: ${BACALHAU_LOG_LEVEL:-info}
API:
  Host: 127.0.0.1
  Port: $1
Compute:
  Enabled: true
  Orchestrators:
    - nats://127.0.0.1:$2
  Heartbeat:
    Interval: 2s
    InfoUpdateInterval: 5s
  AllowListedLocalPaths:
$4
Engines:
  Disabled: [docker]
Publishers:
  Types:
    Local:
      Address: 127.0.0.1
      Port: $3
EOF
}

# Start compute-only node number $1, joining the orchestrator's NATS port $2.
start_compute_node() {
  local i=$1 nats_port=$2 bin=$3 allow_yaml=$4
  local dir="$NODE_DIR/compute-$i"
  mkdir -p "$dir"
  node_config "$(free_port)" "$nats_port" "$(free_port)" "$allow_yaml" > "$dir/config.yaml"
  setsid env -u BACALHAU_API_HOST -u BACALHAU_API_PORT -u BACALHAU_DIR \
    "$bin" serve --data-dir "$dir" --config "$dir/config.yaml" \
    </dev/null >"$NODE_DIR/compute-$i.log" 2>&1 &
  echo $! > "$NODE_DIR/node-$i.pid"
}

cmd_start() {
  if pid="$(running_pid)"; then
    log "already running (pid $pid) in $NODE_DIR"
    cat "$ENV_FILE"
    return 0
  fi
  local bin="${BACALHAU_BIN:-}"
  if [ -z "$bin" ]; then bin="$("$ROOT/scripts/build-bacalhau.sh" | tail -n1)"; fi
  [ -x "$bin" ] || { log "no bacalhau binary at $bin"; exit 1; }

  cmd_stop 2>/dev/null   # leftovers of an earlier run whose orchestrator died
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR/data" "$NODE_DIR/client"
  local api_port nats_port pub_port
  api_port="$(free_port)"; nats_port="$(free_port)"; pub_port="$(free_port)"
  while [ "$nats_port" = "$api_port" ]; do nats_port="$(free_port)"; done
  while [ "$pub_port" = "$api_port" ] || [ "$pub_port" = "$nats_port" ]; do pub_port="$(free_port)"; done

  local allow="${BACALHAU_ALLOW_PATHS:-$ROOT/**:$HOME/.cache/sd-wasm/**}"
  local allow_yaml="" p
  IFS=':' read -r -a _paths <<< "$allow"
  for p in "${_paths[@]}"; do [ -n "$p" ] && allow_yaml+="    - \"$p\""$'\n'; done

  # Node config: read by `serve` from $BACALHAU_DIR/config.yaml (keys: pkg/config/types, v1.9.3).
  {
    node_config "$api_port" "$nats_port" "$pub_port" "$allow_yaml"
    cat <<EOF
Orchestrator:
  Enabled: true
  Host: 127.0.0.1
  Port: $nats_port
JobDefaults:
  Batch:
    Task:
      Publisher:
        Type: local
  Ops:
    Task:
      Publisher:
        Type: local
EOF
  } > "$NODE_DIR/data/config.yaml"
  # Client config: read by every CLI call with BACALHAU_DIR=$NODE_DIR/client.
  cat > "$NODE_DIR/client/config.yaml" <<EOF
DisableAnalytics: true
UpdateConfig:
  Interval: 0s
API:
  Host: 127.0.0.1
  Port: $api_port
EOF
  cat > "$ENV_FILE" <<EOF
export BACALHAU='$bin'
export BACALHAU_API_HOST=127.0.0.1
export BACALHAU_API_PORT=$api_port
export BACALHAU_DIR='$NODE_DIR/client'
export BACALHAU_NODE_DIR='$NODE_DIR'
EOF

  local n_compute="${BACALHAU_COMPUTE_NODES:-1}"
  echo "$n_compute" > "$NODE_DIR/compute-nodes"
  local version
  version="$(BACALHAU_DIR="$NODE_DIR/client" "$bin" version --client --output json 2>&1 | sed -n 's/.*"GitVersion":"\([^"]*\)".*/\1/p')"
  log "starting bacalhau $version, $n_compute compute node(s), in $NODE_DIR (api 127.0.0.1:$api_port, nats $nats_port, publisher $pub_port)"
  # setsid: own process group, so `stop` can signal the node without touching the caller.
  # The environment is cleaned of BACALHAU_* variables the caller may have set for a client.
  setsid env -u BACALHAU_API_HOST -u BACALHAU_API_PORT -u BACALHAU_DIR \
    "$bin" serve --data-dir "$NODE_DIR/data" --config "$NODE_DIR/data/config.yaml" \
    </dev/null >"$LOG_FILE" 2>&1 &
  echo $! > "$PID_FILE"
  local i
  for ((i = 1; i < n_compute; i++)); do start_compute_node "$i" "$nats_port" "$bin" "$allow_yaml"; done

  local timeout="${BACALHAU_NODE_TIMEOUT:-90}" t0=$SECONDS
  until ready; do
    if ! running_pid >/dev/null; then
      log "node exited during startup; log follows"; tail -n 40 "$LOG_FILE" >&2; exit 1
    fi
    if [ $((SECONDS - t0)) -ge "$timeout" ]; then
      log "not ready after ${timeout}s; log tail follows"; tail -n 40 "$LOG_FILE" >&2
      cmd_stop; exit 1
    fi
    sleep 0.5
  done
  log "ready after $((SECONDS - t0)) s (pid $(cat "$PID_FILE"), log $LOG_FILE)"
  cat "$ENV_FILE"
}

# Stop the process whose pid is in file $1: SIGTERM, then SIGKILL to its process group after 20 s.
stop_pidfile() {
  local f=$1 pid
  pid="$(cat "$f" 2>/dev/null || true)"
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then rm -f "$f"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$f"; log "stopped (pid $pid)"; return 0; }
    sleep 0.5
  done
  log "pid $pid did not stop within 20 s; killing its process group"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

cmd_stop() {
  local f found=0
  # compute-only nodes first, then the orchestrator
  for f in "$NODE_DIR"/node-*.pid "$PID_FILE"; do
    [ -f "$f" ] || continue
    found=1
    stop_pidfile "$f"
  done
  [ "$found" = 1 ] || log "not running"
}

case "${1:-}" in
  start)  cmd_start ;;
  stop)   cmd_stop ;;
  env)    running_pid >/dev/null || { log "not running"; exit 1; }; cat "$ENV_FILE" ;;
  status) running_pid >/dev/null && ready ;;
  logs)   cat "$LOG_FILE" ;;
  *) echo "usage: $0 start|stop|env|status|logs" >&2; exit 2 ;;
esac
