"""Celery + Redis (broker and result backend). The worker is started by run.sh:
  celery -A celery_tasks worker -c 2 --pool=prefork --without-gossip --without-mingle --without-heartbeat
  W1: group(noop.s(i) for i in range(10,000)).apply_async().get()
  W2: chain(inc.s(0), inc.s(), ...) 1,000 hops
  W3: chain(noop.s(), chord([noop.s()] * 5,000, join.s()))
Startup = worker launch (PEERS_CELERY_LAUNCHED_AT, epoch seconds) -> first task result.
"""
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import log, report, timeit
import celery, kombu, redis
from celery import chain, chord, group
from celery_tasks import app, inc, join, noop

N1 = int(os.environ.get("N1", 10_000)); N2 = int(os.environ.get("N2", 1_000)); N3 = int(os.environ.get("N3", 5_000))
sys.setrecursionlimit(100_000)  # a 1,000-link chain nests its signatures

if __name__ == "__main__":
    VERSION = (f"celery {celery.__version__}, kombu {kombu.__version__}, redis-py {redis.__version__}, "
               f"redis-server {os.environ.get('PEERS_REDIS_VERSION', '?')}")
    noop.delay().get(timeout=120)  # blocks until the worker is up
    launched = os.environ.get("PEERS_CELERY_LAUNCHED_AT")
    startup = round(time.time() - float(launched), 2) if launched else None
    log(f"{VERSION} worker startup {startup}s")
    X = {"startup_s": startup}
    group(noop.s(i) for i in range(200)).apply_async().get(timeout=60)  # warm-up

    def w1():
        r = group(noop.s(i) for i in range(N1)).apply_async()
        r.get(timeout=600); r.forget()
    report("celery", VERSION, "W1 group", N1, timeit(w1), "tps", X)

    def w2():
        c = chain(inc.s(0), *[inc.s() for _ in range(N2 - 1)])
        assert c.apply_async().get(timeout=600) == N2
    report("celery", VERSION, "W2 chain", N2, timeit(w2), "hop", X)

    def w3():
        c = chain(noop.s(), chord([noop.s() for _ in range(N3)], join.s()))
        assert c.apply_async().get(timeout=600) == N3
    report("celery", VERSION, "W3 chord", N3 + 2, timeit(w3), "tps", X)
