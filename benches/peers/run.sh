#!/usr/bin/env bash
# Peer benchmarks: run the same W1-W3 on Dask, Ray and Celery on this machine.
#
#   bash benches/peers/run.sh                   # all peers
#   PEERS="ray celery" bash benches/peers/run.sh  # a subset (names: dask ray celery)
#
# Idempotent: reuses benches/peers/.venv if the pins already match, installs
# redis-server from Debian only if missing. Everything it starts (Redis, the
# Celery worker, the bench processes and whatever they spawn) is stopped by PID
# on exit. Loopback only. Results are appended to results/<date>.jsonl and
# results/<date>.md is regenerated from it; logs go to results/logs/ (untracked).
set -uo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DIR"
PEERS="${PEERS:-dask ray celery}"
DATE="${PEERS_DATE:-$(date +%F)}"
RUN_ID="$(date +%Y-%m-%dT%H:%M:%S)"
RES="$DIR/results"; LOGS="$RES/logs"
JSONL="$RES/$DATE.jsonl"; MD="$RES/$DATE.md"
VENV="$DIR/.venv"; PY="$VENV/bin/python"
TIMEOUT_DASK="${TIMEOUT_DASK:-1800}"    # per Dask variant
TIMEOUT_RAY="${TIMEOUT_RAY:-1200}"
TIMEOUT_CELERY="${TIMEOUT_CELERY:-1800}"
# Pinned peer versions (see README). redis = redis-py client.
PINS=("dask[distributed]==2026.8.0" "ray==2.60.0" "celery[redis]==5.7.0" "redis==8.1.0")

mkdir -p "$LOGS"
say() { echo "[peers $(date +%T)] $*" >&2; }
T_START=$(date +%s)

# ---------------------------------------------------------------- cleanup
STARTED=()          # PIDs of long-running services we started, in start order
KEEP_PIDS=" $$ "    # never sweep these
stop_pid() {        # stop_pid PID NAME: TERM, wait up to 15 s, then KILL
  local pid=$1 name=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  say "  $name (pid $pid) still alive, SIGKILL"
  kill -KILL "$pid" 2>/dev/null
}
sweep_venv_procs() { # kill by PID any leftover process running out of OUR venv
  local pid cmd
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [[ "$KEEP_PIDS" == *" $pid "* ]] && continue
    cmd=$( { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null ) || continue
    if [[ "$cmd" == *"$VENV/"* ]]; then
      say "leftover process from our venv: pid $pid: ${cmd:0:120}"
      stop_pid "$pid" "leftover"
    fi
  done
}
cleanup() {
  local i
  for ((i=${#STARTED[@]}-1; i>=0; i--)); do
    read -r pid name <<<"${STARTED[$i]}"
    stop_pid "$pid" "$name"
  done
  KEEP_PIDS=" $$ "
  sweep_venv_procs
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 1. venv + pins
T0=$(date +%s)
[ -x "$PY" ] || { say "creating $VENV"; python3 -m venv "$VENV"; }
STAMP="$VENV/.peers-pins"
if [ "$(cat "$STAMP" 2>/dev/null)" != "${PINS[*]}" ]; then
  "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  RESOLVED=()
  for pin in "${PINS[@]}"; do   # check each pin exists on PyPI; else use the nearest version
    pkg="${pin%%==*}"; base="${pkg%%[*}"; want="${pin##*==}"
    avail=$("$PY" -m pip index versions "$base" 2>/dev/null | sed -n 's/^Available versions: //p')
    got=$("$PY" - "$want" "$avail" <<'EOF'
import sys
from pip._vendor.packaging.version import Version
want, avail = sys.argv[1], [a.strip() for a in sys.argv[2].split(",") if a.strip()]
if not avail or want in avail:
    print(want)
else:
    w = Version(want); vs = sorted(map(Version, avail))
    lower = [v for v in vs if v <= w]
    print(lower[-1] if lower else vs[0])
EOF
)
    if [ "$got" != "$want" ]; then
      say "PIN UNAVAILABLE: $pin -> using $got"; echo "$(date +%F) $pin -> $got" >>"$LOGS/pins.log"
    fi
    RESOLVED+=("$pkg==$got")
  done
  say "pip install ${RESOLVED[*]} (log: $LOGS/pip.log)"
  if ! "$PY" -m pip install "${RESOLVED[@]}" >"$LOGS/pip.log" 2>&1; then
    say "pip install failed:"; tail -20 "$LOGS/pip.log" >&2; exit 1
  fi
  echo "${PINS[*]}" > "$STAMP"
else
  say "venv up to date (${PINS[*]})"
fi
INSTALL_S=$(( $(date +%s) - T0 ))

# ---------------------------------------------------------------- 2. redis-server (Celery only)
if [[ " $PEERS " == *" celery "* ]] && ! command -v redis-server >/dev/null; then
  T0=$(date +%s)
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  say "installing redis-server from Debian (apt-get)"
  # RUNLEVEL=1: keep the package's init script from starting a system Redis
  $SUDO apt-get update >"$LOGS/apt.log" 2>&1
  if ! $SUDO env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server >>"$LOGS/apt.log" 2>&1; then
    say "apt-get install redis-server failed:"; tail -20 "$LOGS/apt.log" >&2
  fi
  INSTALL_S=$(( INSTALL_S + $(date +%s) - T0 ))
fi

# ---------------------------------------------------------------- 3. run peers
COMMON_ENV=(PEERS_RUN_ID="$RUN_ID" PYTHONUNBUFFERED=1)
run_bench() {  # run_bench LABEL TIMEOUT ENV... -- SCRIPT
  local label=$1 to=$2; shift 2
  local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  local log="$LOGS/$DATE-${label//[^A-Za-z0-9=-]/_}.log" t0 rc
  say "== $label (timeout ${to}s, log $log)"
  t0=$(date +%s)
  env "${COMMON_ENV[@]}" "${envs[@]}" timeout -k 30 "$to" "$PY" "$@" \
    >>"$JSONL" 2> >(tee -a "$log" >&2)
  rc=$?
  say "== $label finished rc=$rc in $(( $(date +%s) - t0 ))s"
  if [ $rc -ne 0 ]; then
    local why="exit $rc"; [ $rc -eq 124 ] && why="timeout after ${to}s"; [ $rc -eq 137 ] && why="killed after timeout ${to}s"
    "$PY" - "$RUN_ID" "$label" "$why" "$log" >>"$JSONL" <<'EOF'
import json, sys
run_id, system, why, log = sys.argv[1:5]
tail = open(log, errors="replace").read().splitlines()[-15:]
print(json.dumps({"run_id": run_id, "system": system, "error": why, "stderr_tail": "\n".join(tail)}))
EOF
  fi
  sweep_venv_procs   # anything the bench left behind (dask nannies, ray daemons)
}

TIMES="none; "
for peer in $PEERS; do
  T0=$(date +%s)
  case "$peer" in
    dask)
      run_bench dask "$TIMEOUT_DASK" -- bench_dask.py
      run_bench "dask (worker-saturation=inf)" "$TIMEOUT_DASK" DASK_SAT=inf -- bench_dask.py ;;
    ray)
      run_bench ray "$TIMEOUT_RAY" RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 -- bench_ray.py ;;
    celery)
      if ! command -v redis-server >/dev/null; then
        "$PY" -c 'import json,sys; print(json.dumps({"run_id": sys.argv[1], "system": "celery", "error": "redis-server not installed (see results/logs/apt.log)"}))' "$RUN_ID" >>"$JSONL"
        continue
      fi
      PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      REDIS_VERSION=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
      redis-server --port "$PORT" --bind 127.0.0.1 --protected-mode yes --save "" --appendonly no \
        --dir "$LOGS" >"$LOGS/$DATE-redis.log" 2>&1 &
      REDIS_PID=$!; STARTED+=("$REDIS_PID redis-server"); KEEP_PIDS+="$REDIS_PID "
      export PEERS_REDIS_URL="redis://127.0.0.1:$PORT"
      for _ in $(seq 50); do "$PY" -c "import redis; redis.Redis(port=$PORT).ping()" 2>/dev/null && break; sleep 0.2; done
      say "redis-server $REDIS_VERSION pid $REDIS_PID on 127.0.0.1:$PORT"
      LAUNCHED=$(date +%s.%N)
      "$VENV/bin/celery" -A celery_tasks worker -c 2 --pool=prefork --loglevel=WARNING \
        --without-gossip --without-mingle --without-heartbeat >"$LOGS/$DATE-celery-worker.log" 2>&1 &
      CELERY_PID=$!; STARTED+=("$CELERY_PID celery-worker"); KEEP_PIDS+="$CELERY_PID "
      say "celery worker pid $CELERY_PID"
      sleep 3; for c in $(cat /proc/$CELERY_PID/task/*/children 2>/dev/null); do KEEP_PIDS+="$c "; done
      run_bench celery "$TIMEOUT_CELERY" PEERS_MINE_PIDS="$REDIS_PID $CELERY_PID" PEERS_REDIS_VERSION="$REDIS_VERSION" \
        PEERS_CELERY_LAUNCHED_AT="$LAUNCHED" -- bench_celery.py
      stop_pid "$CELERY_PID" celery-worker; stop_pid "$REDIS_PID" redis-server
      STARTED=(); KEEP_PIDS=" $$ " ;;
    *) say "unknown peer '$peer' (known: dask ray celery)"; continue ;;
  esac
  [ "$TIMES" = "none; " ] && TIMES=""
  TIMES+="$peer $(( $(date +%s) - T0 ))s; "
done

# ---------------------------------------------------------------- 4. markdown
CPU=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
MEM=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
HEADER="# Peer benchmarks, $DATE

Machine: $(nproc) vCPU ($CPU), $MEM, $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), Python $("$PY" -c 'import platform; print(platform.python_version())').
Generated by \`bash benches/peers/run.sh\` (last run $RUN_ID, peers: $PEERS; install/check ${INSTALL_S}s; run times: ${TIMES%; }).
Each workload: warm-up, then 3 gated repetitions; best = fastest rep, median = median of 3. Startup is excluded from the timings.
Raw records: \`$DATE.jsonl\`. See ../README.md for what is measured and the caveats.
"
[ -s "$JSONL" ] || { say "no results recorded in $JSONL"; exit 1; }
"$PY" "$DIR/make_table.py" "$JSONL" "$HEADER" > "$MD"
say "wrote $MD (total $(( $(date +%s) - T_START ))s)"
cat "$MD"
