"""Celery app for the peer benchmark. Redis is broker and result backend;
run.sh starts redis-server on a free loopback port and exports PEERS_REDIS_URL."""
import os
from celery import Celery

URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379")
app = Celery("celery_tasks", broker=f"{URL}/0", backend=f"{URL}/1")
app.conf.update(broker_connection_retry_on_startup=True, result_expires=600)


@app.task
def noop(x=None):
    return None


@app.task
def inc(x):
    return (x or 0) + 1


@app.task
def join(results):
    return len(results)
