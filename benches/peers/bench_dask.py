"""Dask distributed: LocalCluster(n_workers=2, threads_per_worker=1), worker
processes, dashboard off, loopback only.
  W1: client.map over 10,000 no-op tasks (plus a per-call client.submit loop variant)
  W2: 1,000-hop dependency chain (dask.delayed graph; plus a chain of futures)
  W3: 1 root -> 5,000 parallel no-ops -> 1 join (dask.delayed graph)
DASK_SAT=inf sets distributed.scheduler.worker-saturation (disables root-task queuing).
"""
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import log, report, timeit
import dask, distributed
from distributed import Client, LocalCluster, wait

N1 = int(os.environ.get("N1", 10_000)); N2 = int(os.environ.get("N2", 1_000)); N3 = int(os.environ.get("N3", 5_000))


def noop(x=None):
    return None


def inc(x):
    return (x or 0) + 1


def join(*xs):
    return len(xs)


if __name__ == "__main__":
    SAT = os.environ.get("DASK_SAT")
    LABEL = "dask" if not SAT else f"dask (worker-saturation={SAT})"
    if SAT:
        dask.config.set({"distributed.scheduler.worker-saturation": float(SAT)})
    VERSION = f"dask {dask.__version__}, distributed {distributed.__version__}"
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    startup = round(time.perf_counter() - t0, 2)
    log(f"{VERSION} startup {startup:.2f}s")
    X = {"startup_s": startup}

    wait(client.map(noop, range(200), pure=False))  # warm-up

    def w1_map():
        fs = client.map(noop, range(N1), pure=False)
        wait(fs); del fs
    report(LABEL, VERSION, "W1 client.map", N1, timeit(w1_map), "tps", X)

    def w1_submit():
        fs = [client.submit(noop, i, pure=False) for i in range(N1)]
        wait(fs); del fs
    report(LABEL, VERSION, "W1 submit-loop", N1, timeit(w1_submit), "tps", X)

    def w2_delayed():
        d = dask.delayed(inc, pure=False)(0)
        for _ in range(N2 - 1):
            d = dask.delayed(inc, pure=False)(d)
        r = client.compute(d).result()
        assert r == N2, r
    report(LABEL, VERSION, "W2 chain delayed", N2, timeit(w2_delayed), "hop", X)

    def w2_futures():
        f = client.submit(inc, 0, pure=False)
        for _ in range(N2 - 1):
            f = client.submit(inc, f, pure=False)
        assert f.result() == N2
    report(LABEL, VERSION, "W2 chain futures", N2, timeit(w2_futures), "hop", X)

    def w3_delayed():
        root = dask.delayed(noop, pure=False)()
        mids = [dask.delayed(noop, pure=False)(root) for _ in range(N3)]
        r = client.compute(dask.delayed(join, pure=False)(*mids)).result()
        assert r == N3, r
    report(LABEL, VERSION, "W3 fanout delayed", N3 + 2, timeit(w3_delayed), "tps", X)

    client.close(); cluster.close()
