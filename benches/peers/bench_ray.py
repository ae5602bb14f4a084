"""Ray: ray.init(num_cpus=2, include_dashboard=False) -- a fresh single-node
cluster on 127.0.0.1, remote functions (num_cpus=1 per task, the default).
  W1: 10,000 noop.remote() then ray.get(all)
  W2: 1,000-hop chain r = inc.remote(r) (ObjectRef argument = dependency)
  W3: root -> 5,000 noop.remote(root) -> join.remote(*mids)
The idle gate uses quiet=0.75 because Ray's own idle daemons keep some CPU busy.
"""
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import log, report, timeit
import ray

N1 = int(os.environ.get("N1", 10_000)); N2 = int(os.environ.get("N2", 1_000)); N3 = int(os.environ.get("N3", 5_000))
QUIET = float(os.environ.get("PEERS_QUIET_RAY", "0.75"))


@ray.remote
def noop(x=None):
    return None


@ray.remote
def inc(x):
    return (x or 0) + 1


@ray.remote
def join(*xs):
    return len(xs)


if __name__ == "__main__":
    VERSION = f"ray {ray.__version__}"
    t0 = time.perf_counter()
    # Single-node cluster that advertises and binds 127.0.0.1: ray.init() would
    # turn _node_ip_address="127.0.0.1" into the host's external IP, but with
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (set by run.sh) Ray picks loopback as
    # it does on macOS. Without it Ray's gRPC servers listen on all interfaces.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    startup = round(time.perf_counter() - t0, 2)
    log(f"{VERSION} startup {startup:.2f}s")
    X = {"startup_s": startup}
    ray.get([noop.remote(i) for i in range(200)])  # warm-up: worker processes started

    def w1():
        ray.get([noop.remote(i) for i in range(N1)])
    report("ray", VERSION, "W1", N1, timeit(w1, quiet=QUIET), "tps", X)

    def w2():
        r = inc.remote(0)
        for _ in range(N2 - 1):
            r = inc.remote(r)
        assert ray.get(r) == N2
    report("ray", VERSION, "W2 chain", N2, timeit(w2, quiet=QUIET), "hop", X)

    def w3():
        root = noop.remote()
        mids = [noop.remote(root) for _ in range(N3)]
        assert ray.get(join.remote(*mids)) == N3
    report("ray", VERSION, "W3 fanout", N3 + 2, timeit(w3, quiet=QUIET), "tps", X)
    ray.shutdown()
