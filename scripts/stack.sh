#!/usr/bin/env bash
# The compose stack's topology, natively on loopback ports, from Debian packages (no docker):
#   redis-server  AOF (appendfsync everysec) in the run dir        127.0.0.1:$STACK_REDIS_PORT
#   genrec x N    `genrec serve --no-build`, sharing that Redis      $STACK_REPLICA_PORTS
#   nginx         load-balances the replicas (least connections)    127.0.0.1:$STACK_NGINX_PORT
#   prometheus    scrapes every replica every 5 s (static list)     127.0.0.1:$STACK_PROMETHEUS_PORT
# Grafana is not in Debian: load docker/grafana/dashboards/genrec.json into one of your own
# (README, "Stack and dashboard"); tests/test_dashboard.py checks every panel against this
# stack's Prometheus.
#
#   scripts/stack.sh up [--artifacts DIR] [--dataset D] [--run-dir DIR]
#   scripts/stack.sh status [--run-dir DIR]
#   scripts/stack.sh down [--run-dir DIR]
#
# Everything a run writes (config, data, logs, pids) is in the run dir (default .stack/).
# The admin token comes from GENREC_ADMIN_TOKEN, or the file named by GENREC_ADMIN_TOKEN_FILE,
# or else a random one is made once in <run dir>/secrets/admin_token (mode 600).
# Ports: STACK_REDIS_PORT (6380), STACK_REPLICA_PORTS ("8001 8002"), STACK_NGINX_PORT (8080),
# STACK_PROMETHEUS_PORT (9091); STACK_READY_TIMEOUT_S (180) bounds the wait for readiness.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TEMPLATES="$ROOT/docker/native"
APT_HINT="sudo apt-get install -y redis-server nginx prometheus"

die() { echo "stack: $*" >&2; exit 2; }

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 2
}

CMD="${1:-}"
case "$CMD" in up|status|down) shift ;; *) usage ;; esac
RUN_DIR="${STACK_RUN_DIR:-$ROOT/.stack}"
DATASET="${GENREC_DATASET:-ml-100k}"
ARTIFACTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --artifacts) ARTIFACTS="${2:?--artifacts needs a directory}"; shift 2 ;;
    --dataset) DATASET="${2:?--dataset needs a name or path}"; shift 2 ;;
    --run-dir) RUN_DIR="${2:?--run-dir needs a directory}"; shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown argument: $1 (see scripts/stack.sh --help)" ;;
  esac
done
mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
PIDS="$RUN_DIR/pids"
LOGS="$RUN_DIR/logs"

if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
GENREC="${STACK_GENREC_BIN:-$ROOT/.venv/bin/genrec}"
[ -x "$GENREC" ] || GENREC="$(command -v genrec || true)"

# Debian puts nginx in /usr/sbin, which is not on a normal user's PATH.
find_bin() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }

check_packages() {
  REDIS_BIN="$(find_bin "${STACK_REDIS_BIN:-redis-server}")"
  NGINX_BIN="$(find_bin "${STACK_NGINX_BIN:-nginx}")"
  PROMETHEUS_BIN="$(find_bin "${STACK_PROMETHEUS_BIN:-prometheus}")"
  local missing=""
  [ -n "$REDIS_BIN" ] || missing="$missing redis-server"
  [ -n "$NGINX_BIN" ] || missing="$missing nginx"
  [ -n "$PROMETHEUS_BIN" ] || missing="$missing prometheus"
  if [ -n "$missing" ]; then
    die "missing:$missing. Install them with: $APT_HINT
  (on a machine with systemd this also starts their system services; stop them with
  sudo systemctl disable --now nginx prometheus redis-server, this script runs its own)"
  fi
  [ -n "$GENREC" ] || die "no genrec command: run scripts/setup.sh first"
}

# The ports of this run: chosen at `up`, remembered in the run dir for status/down.
load_ports() {
  if [ -f "$RUN_DIR/stack.env" ]; then
    # shellcheck disable=SC1091
    . "$RUN_DIR/stack.env"
  else
    REDIS_PORT="${STACK_REDIS_PORT:-6380}"
    REPLICA_PORTS="${STACK_REPLICA_PORTS:-8001 8002}"
    NGINX_PORT="${STACK_NGINX_PORT:-8080}"
    PROMETHEUS_PORT="${STACK_PROMETHEUS_PORT:-9091}"
  fi
}

# running PID: alive and not a zombie (the stack's processes outlive this script, so init
# reaps them, sometimes seconds later, and a zombie still answers kill -0).
running() {
  kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/stat" ] || return 0
  [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]
}

alive() { [ -f "$PIDS/$1.pid" ] && running "$(cat "$PIDS/$1.pid")"; }

components() {
  echo redis
  local i=1
  for _ in $REPLICA_PORTS; do echo "genrec-$i"; i=$((i + 1)); done
  echo nginx
  echo prometheus
}

# start NAME CMD...: in the background, detached from this shell's terminal; pid recorded.
start() {
  local name="$1"; shift
  nohup "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

# render TEMPLATE OUT KEY=VALUE...: replaces every @KEY@.
render() {
  "$PY" - "$@" <<'PYEOF'
import sys
from pathlib import Path
text = Path(sys.argv[1]).read_text()
for pair in sys.argv[3:]:
    key, value = pair.split("=", 1)
    text = text.replace(f"@{key}@", value)
Path(sys.argv[2]).write_text(text)
PYEOF
}

# wait_http NAME URL: until URL answers 200 (or NAME's process dies, or the timeout).
wait_http() {
  "$PY" - "$1" "$2" "${STACK_READY_TIMEOUT_S:-180}" "$PIDS/$1.pid" "$LOGS/$1.log" <<'PYEOF'
import os, sys, time, urllib.request
name, url, timeout, pidfile, log = sys.argv[1:6]
timeout = float(timeout)
pid = int(open(pidfile).read())
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"stack: {name} exited while starting; see {log}")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.25)
sys.exit(f"stack: {name} not ready at {url} after {timeout:.0f} s; see {log}")
PYEOF
}

port_free() {
  "$PY" -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError: sys.exit(1)' "$1"
}

admin_token() {
  if [ -n "${GENREC_ADMIN_TOKEN:-}" ]; then return; fi
  if [ -n "${GENREC_ADMIN_TOKEN_FILE:-}" ]; then
    [ -r "$GENREC_ADMIN_TOKEN_FILE" ] || die "cannot read GENREC_ADMIN_TOKEN_FILE=$GENREC_ADMIN_TOKEN_FILE"
    GENREC_ADMIN_TOKEN="$(tr -d '\n' <"$GENREC_ADMIN_TOKEN_FILE")"
  else
    local file="$RUN_DIR/secrets/admin_token"
    if [ ! -s "$file" ]; then
      (umask 077; mkdir -p "$RUN_DIR/secrets"; "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$file")
    fi
    GENREC_ADMIN_TOKEN="$(tr -d '\n' <"$file")"
    echo "admin token: $file"
  fi
  export GENREC_ADMIN_TOKEN
}

up() {
  check_packages
  load_ports
  for c in $(components); do
    if alive "$c"; then die "$c is already running (run dir $RUN_DIR): scripts/stack.sh down first"; fi
  done
  for p in $REDIS_PORT $REPLICA_PORTS $NGINX_PORT $PROMETHEUS_PORT; do
    port_free "$p" || die "port $p is in use; pick others with STACK_*_PORT (see --help)"
  done
  ARTIFACTS="${ARTIFACTS:-${GENREC_ARTIFACTS_DIR:-$ROOT/artifacts/$(basename "$DATASET")}}"
  [ -e "$ARTIFACTS" ] || die "no artifacts at $ARTIFACTS: run \`genrec build --dataset $DATASET\` (or scripts/serve.sh once) first, or pass --artifacts"
  ARTIFACTS="$(cd "$ARTIFACTS" && pwd)"
  admin_token
  mkdir -p "$PIDS" "$LOGS" "$RUN_DIR/redis" "$RUN_DIR/nginx" "$RUN_DIR/prometheus/data"
  printf 'REDIS_PORT=%q\nREPLICA_PORTS=%q\nNGINX_PORT=%q\nPROMETHEUS_PORT=%q\n' \
    "$REDIS_PORT" "$REPLICA_PORTS" "$NGINX_PORT" "$PROMETHEUS_PORT" >"$RUN_DIR/stack.env"

  start redis "$REDIS_BIN" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN_DIR/redis" \
    --appendonly yes --appendfsync everysec --save "" --daemonize no
  "$PY" - "$REDIS_PORT" <<'PYEOF' || die "redis-server did not answer; see $LOGS/redis.log"
import sys, time, redis
client = redis.Redis(port=int(sys.argv[1]), socket_connect_timeout=0.2)
for _ in range(100):
    try:
        if client.ping():
            sys.exit(0)
    except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
        time.sleep(0.1)  # not up yet, or replaying its AOF
sys.exit(1)
PYEOF

  local i=1 servers="" targets=""
  for port in $REPLICA_PORTS; do
    GENREC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" GENREC_DATASET="$DATASET" \
      start "genrec-$i" "$GENREC" serve --no-build --dataset "$DATASET" \
      --artifacts "$ARTIFACTS" --host 127.0.0.1 --port "$port"
    servers="$servers        server 127.0.0.1:$port max_fails=1 fail_timeout=2s;"$'\n'
    targets="$targets${targets:+, }'127.0.0.1:$port'"
    i=$((i + 1))
  done
  render "$TEMPLATES/nginx.conf.template" "$RUN_DIR/nginx/nginx.conf" \
    "RUN_DIR=$RUN_DIR" "NGINX_PORT=$NGINX_PORT" "UPSTREAM_SERVERS=${servers%$'\n'}"
  render "$TEMPLATES/prometheus.yml.template" "$RUN_DIR/prometheus/prometheus.yml" \
    "TARGETS=$targets"
  # -e: Debian's nginx opens /var/log/nginx/error.log before it reads the config otherwise.
  start nginx "$NGINX_BIN" -p "$RUN_DIR/nginx" -c "$RUN_DIR/nginx/nginx.conf" \
    -e "$LOGS/nginx-error.log"
  start prometheus "$PROMETHEUS_BIN" --config.file="$RUN_DIR/prometheus/prometheus.yml" \
    --storage.tsdb.path="$RUN_DIR/prometheus/data" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"

  i=1
  for port in $REPLICA_PORTS; do
    wait_http "genrec-$i" "http://127.0.0.1:$port/readyz" || { down >/dev/null; exit 1; }
    i=$((i + 1))
  done
  wait_http nginx "http://127.0.0.1:$NGINX_PORT/healthz" || { down >/dev/null; exit 1; }
  wait_http prometheus "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" || { down >/dev/null; exit 1; }
  status
}

status() {
  load_ports
  local bad=0 c
  for c in $(components); do
    if alive "$c"; then
      printf '%-12s running  pid %s\n' "$c" "$(cat "$PIDS/$c.pid")"
    else
      printf '%-12s stopped\n' "$c"; bad=1
    fi
  done
  echo "genrec (nginx): http://127.0.0.1:$NGINX_PORT   prometheus: http://127.0.0.1:$PROMETHEUS_PORT"
  echo "replicas: $REPLICA_PORTS   redis: redis://127.0.0.1:$REDIS_PORT/0   run dir: $RUN_DIR"
  return "$bad"
}

# stop NAME...: SIGTERM to each, then SIGKILL to what still runs after 15 s; only the pids this
# script recorded.
stop() {
  local name pid pids=""
  for name in "$@"; do
    [ -f "$PIDS/$name.pid" ] || continue
    pid="$(cat "$PIDS/$name.pid")"
    if running "$pid"; then kill -TERM "$pid" 2>/dev/null || true; pids="$pids $pid"; fi
  done
  for _ in $(seq 150); do
    local left=""
    for pid in $pids; do running "$pid" && left="$left $pid"; done
    pids="$left"
    [ -n "$pids" ] || break
    sleep 0.1
  done
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  for name in "$@"; do rm -f "$PIDS/$name.pid"; done
}

down() {
  load_ports
  # Redis last: the replicas may still write while they shut down.
  # shellcheck disable=SC2046
  stop nginx prometheus $(components | grep '^genrec-')
  stop redis
  echo "stack stopped (data and logs kept in $RUN_DIR)"
}

case "$CMD" in
  up) up ;;
  status) status ;;
  down) down ;;
esac
