"""Which worker processes are online for which queue, so the engine can size its chunks.

Each worker node keeps one short-lived Redis key alive while it runs; a node that dies
simply stops renewing it.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import redis
from celery import bootsteps

from batch.constants import WORKER_CAPACITY_KEY_PREFIX, WORKER_NAMES_KEY

#: A node renews its key this many times per TTL (``BATCH_WORKER_TTL_SECONDS``).
RENEWALS_PER_TTL = 3
#: How long a count of processes per queue is reused when runs are planned.
CACHE_SECONDS = 2.0

_cache: dict[str, tuple[float, int]] = {}


def announce(
    client: redis.Redis,
    hostname: str,
    concurrency: int,
    queues: list[str],
    *,
    ttl: int,
    since: str | None = None,
) -> None:
    """Record for ``ttl`` seconds that ``hostname`` runs ``concurrency`` processes on ``queues``,
    and since when (ISO time: this node's start; a restarted node has a new one)."""
    payload = json.dumps({"concurrency": concurrency, "queues": queues, "since": since})
    with client.pipeline() as pipe:
        pipe.set(WORKER_CAPACITY_KEY_PREFIX + hostname, payload, ex=ttl)
        pipe.sadd(WORKER_NAMES_KEY, hostname)
        pipe.execute()


def withdraw(client: redis.Redis, hostname: str) -> None:
    """Forget ``hostname`` (at a clean shutdown)."""
    with client.pipeline() as pipe:
        pipe.delete(WORKER_CAPACITY_KEY_PREFIX + hostname)
        pipe.srem(WORKER_NAMES_KEY, hostname)
        pipe.execute()


def online_workers(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every announced worker node still alive: hostname -> {concurrency, queues}."""
    names = sorted(client.smembers(WORKER_NAMES_KEY))
    values = client.mget([WORKER_CAPACITY_KEY_PREFIX + name for name in names]) if names else []
    gone = [name for name, value in zip(names, values, strict=True) if not value]
    if gone:  # nodes that died without withdrawing: their keys expired
        client.srem(WORKER_NAMES_KEY, *gone)
    return {name: json.loads(value) for name, value in zip(names, values, strict=True) if value}


def processes_for_queue(client: redis.Redis, queue: str) -> int:
    """Worker processes consuming ``queue`` right now (cached for a few seconds)."""
    now = time.monotonic()
    cached = _cache.get(queue)
    if cached and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    total = sum(
        worker["concurrency"]
        for worker in online_workers(client).values()
        if queue in worker["queues"]
    )
    _cache[queue] = (now, total)
    return total


class CapacityAnnouncer(bootsteps.StartStopStep):
    """Worker bootstep that keeps this node's capacity key alive."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        client = worker.app.batch_core.redis
        queues = sorted(worker.app.amqp.queues.consume_from)
        ttl = worker.app.batch_core.settings.worker_ttl_seconds
        since = datetime.now(UTC).isoformat()

        def renew() -> None:
            announce(client, worker.hostname, worker.concurrency, queues, ttl=ttl, since=since)

        renew()
        self.tref = worker.timer.call_repeatedly(ttl / RENEWALS_PER_TTL, renew)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
        withdraw(worker.app.batch_core.redis, worker.hostname)
