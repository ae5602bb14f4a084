"""Render results/<date>.jsonl as a markdown table.
Usage: make_table.py results/<date>.jsonl > results/<date>.md
For each (system, workload) the most recent record wins, so re-running one peer
(PEERS="ray" bash run.sh) on the same day updates just its rows.
Hand-written notes in results/<date>.notes.md, if present, are appended."""
import json, os, sys

path = sys.argv[1]
header = sys.argv[2] if len(sys.argv) > 2 else ""
latest, errors, order = {}, {}, []
for line in open(path):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if "error" in r:
        errors[r["system"]] = r
        continue
    key = (r["system"], r["workload"])
    if key not in latest:
        order.append(key)
    latest[key] = r
    # a success from a later run supersedes an earlier failure of that system
    if r["system"] in errors and errors[r["system"]].get("run_id") != r.get("run_id"):
        del errors[r["system"]]

systems = []
for s, _ in order:
    if s not in systems:
        systems.append(s)


def fmt(v, nd=0):
    if v is None:
        return "–"
    return f"{v:,.{nd}f}"


def pair(r, a, b, nd):
    return f"{fmt(r[a], nd)} / {fmt(r[b], nd)}" if r else "–"


# Primary table: the first workload of each kind a system reported
# (for Dask: client.map, delayed chain, delayed fan-out).
print(header)
print("| System | Version | W1 tasks/s best / median | W2 ms/hop best / median | W3 tasks/s best / median | Startup |")
print("|---|---|---|---|---|---|")
for s in systems:
    recs = [latest[k] for k in order if k[0] == s]
    by = {w: next((r for r in recs if r["workload"].startswith(w)), None) for w in ("W1", "W2", "W3")}
    any_r = recs[0]
    st = any_r.get("startup_s")
    print(f"| {s} | {any_r['version']} | {pair(by['W1'], 'tasks_per_s_best', 'tasks_per_s_median', 0)} | "
          f"{pair(by['W2'], 'ms_per_hop_best', 'ms_per_hop_median', 2)} | "
          f"{pair(by['W3'], 'tasks_per_s_best', 'tasks_per_s_median', 0)} | "
          f"{'–' if st is None else f'{st:.1f} s'} |")
for s, e in errors.items():
    print(f"| {s} | – | failed: {e['error']} | | | |")

print("\nAll workload variants (times in s; foreign = CPU share used by other tenants per kept rep; "
      "idle = machine idle fraction before each rep):\n")
print("| System | Workload | n | best | median | reps (s) | foreign CPU | idle before | discarded | gate timeouts |")
print("|---|---|---|---|---|---|---|---|---|---|")
for k in order:
    r = latest[k]
    if "tasks_per_s_best" in r:
        b, m = f"{r['tasks_per_s_best']:,.0f} tasks/s", f"{r['tasks_per_s_median']:,.0f} tasks/s"
    else:
        b, m = f"{r['ms_per_hop_best']:.2f} ms/hop", f"{r['ms_per_hop_median']:.2f} ms/hop"
    fc = ", ".join(f"{x:.1%}" for x in r.get("foreign_cpu_frac", []))
    ib = ", ".join(f"{x:.0%}" for x in r.get("idle_before", []))
    print(f"| {r['system']} | {r['workload']} | {r['n']:,} | {b} | {m} | {', '.join(map(str, r['times_s']))} | "
          f"{fc} | {ib} | {r.get('discarded_reps', 0)} | {r.get('gate_timeouts', 0)} |")
for s, e in errors.items():
    print(f"\n**{s} failed** ({e['error']}):\n\n```\n{e.get('stderr_tail', '').strip()}\n```")

notes = path[:-len(".jsonl")] + ".notes.md"
if os.path.exists(notes):
    print("\n" + open(notes).read().rstrip())
