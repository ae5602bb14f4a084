"""Timing, idle gate and foreign-CPU accounting shared by the peer benchmarks.

Adapted from the research harness (shared/research/peer-bench/common.py).

The 2 vCPUs of the benchmark VM are shared with other tenants, so every
repetition is gated:
  * before a rep we wait (bounded) until the machine is >= `quiet` idle;
  * during a rep we measure CPU used by processes that are *not ours*
    (total busy ticks from /proc/stat minus ticks of our own processes);
  * a rep where foreign CPU exceeded `foreign_limit` of machine capacity is
    discarded and re-run (at most `max_retries` times per workload, after
    which it is kept and the foreign share is visible in the record).

Output contract: every result is ONE JSON line on stdout. Progress and
diagnostics go to stderr. run.sh appends stdout to results/<date>.jsonl.
"""
import json, os, platform, resource, statistics, sys, time

PEERS_DIR = os.path.dirname(os.path.abspath(__file__))
HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count()

# Processes count as "ours" if they descend from this process or from a PID in
# PEERS_MINE_PIDS (run.sh passes redis-server and the celery worker), or if
# their command line or cwd mentions the peers directory (the venv).
MINE_PIDS = set(os.environ.get("PEERS_MINE_PIDS", "").split())

QUIET = float(os.environ.get("PEERS_QUIET", "0.85"))          # idle fraction to wait for
QUIET_MAX_WAIT = float(os.environ.get("PEERS_QUIET_MAX_WAIT", "60"))  # seconds per rep
FOREIGN_LIMIT = float(os.environ.get("PEERS_FOREIGN_LIMIT", "0.05"))
MAX_RETRIES = int(os.environ.get("PEERS_MAX_RETRIES", "3"))
REPS = int(os.environ.get("PEERS_REPS", "3"))
RUN_ID = os.environ.get("PEERS_RUN_ID", time.strftime("%Y-%m-%dT%H:%M:%S"))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def _total_busy():
    # user+nice+system+irq+softirq (idle, iowait, steal, guest* excluded)
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    return busy, busy + v[3] + v[4]


def _mine_ticks():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children
    tot = int((ru.ru_utime + ru.ru_stime) * HZ)
    stats = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    st = f.read()
                stats[pid] = st[st.rfind(")") + 2:].split()  # [0]=state [1]=ppid ... [11]=utime [12]=stime
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
    # descendants of this process and of PEERS_MINE_PIDS (Ray renames its
    # workers to "ray::IDLE", so their command line does not show the venv)
    roots = MINE_PIDS | {str(os.getpid())}
    children = {}
    for pid, fields in stats.items():
        children.setdefault(fields[1], []).append(pid)
    tree, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p not in tree:
            tree.add(p); todo.extend(children.get(p, []))
    for pid, fields in stats.items():
        try:
            mine = pid in tree
            if not mine:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
                try:
                    cwd = os.readlink(f"/proc/{pid}/cwd")
                except OSError:
                    cwd = ""
                mine = PEERS_DIR in cmd or cwd.startswith(PEERS_DIR)
            if not mine:
                continue
            tot += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            pass
    return tot


def idle_fraction(interval=1.0):
    b0, t0 = _total_busy(); time.sleep(interval); b1, t1 = _total_busy()
    return 1 - (b1 - b0) / max(1, (t1 - t0))


def wait_quiet(threshold=QUIET, max_wait=QUIET_MAX_WAIT):
    """Bounded wait for an idle machine. Returns (idle_fraction, gate_timed_out)."""
    deadline = time.time() + max_wait
    while True:
        f = idle_fraction(1.0)
        if f >= threshold:
            return round(f, 3), False
        if time.time() > deadline:
            return round(f, 3), True
        time.sleep(2)


def timeit(fn, reps=REPS, quiet=QUIET):
    ts, foreign, idle, gate_timeouts, discarded = [], [], [], 0, 0
    while len(ts) < reps:
        f_idle, timed_out = wait_quiet(quiet)
        gate_timeouts += timed_out
        b0, _ = _total_busy(); m0 = _mine_ticks(); t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        b1, _ = _total_busy(); m1 = _mine_ticks()
        frac = max(0, ((b1 - b0) - (m1 - m0)) / HZ) / (dt * NCPU)
        if frac > FOREIGN_LIMIT and discarded < MAX_RETRIES:
            discarded += 1
            log(f"  discard rep ({dt:.3f}s): foreign CPU {frac:.1%}")
            continue
        log(f"  rep {len(ts) + 1}: {dt:.3f}s (idle before {f_idle:.0%}, foreign {frac:.1%})")
        ts.append(dt); foreign.append(round(frac, 3)); idle.append(f_idle)
    timeit.last = {"foreign_cpu_frac": foreign, "idle_before": idle,
                   "gate_timeouts": gate_timeouts, "discarded_reps": discarded}
    return ts


def report(system, version, workload, n, times, unit_kind, extra=None):
    tmin, tmed = min(times), statistics.median(times)
    out = {"run_id": RUN_ID, "system": system, "version": version,
           "workload": workload, "n": n,
           "times_s": [round(t, 4) for t in times],
           "min_s": round(tmin, 4), "median_s": round(tmed, 4)}
    if unit_kind == "tps":
        out["tasks_per_s_best"] = round(n / tmin, 1)
        out["tasks_per_s_median"] = round(n / tmed, 1)
    else:
        out["ms_per_hop_best"] = round(tmin * 1000 / n, 3)
        out["ms_per_hop_median"] = round(tmed * 1000 / n, 3)
    out.update(getattr(timeit, "last", {}))
    out.update({"ncpu": NCPU, "python": platform.python_version()})
    if extra:
        out.update(extra)
    print(json.dumps(out), flush=True)
    log(f"{system} {workload}: " + ", ".join(
        f"{k}={out[k]}" for k in out if k.startswith(("tasks_per_s", "ms_per_hop"))))
    return out
