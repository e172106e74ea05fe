"""A worker node's background loops: each in a thread, one node at a time by a Redis lock.

Several nodes run the same loop (the recovery sweep, alert delivery); the lock lets one of
them work at a time. The holder renews it at each pass; when it is lost (a flush, a restart
of Redis, a pass longer than its timeout) any node may take it anew.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import kombu.exceptions
import redis
import sqlalchemy.exc
from celery import bootsteps
from redis.lock import Lock

from batch.forks import no_fork

log = logging.getLogger(__name__)

#: Errors that mean a service is away for now: the pass is skipped and logged in one line.
SERVICE_ERRORS = (
    redis.RedisError,
    sqlalchemy.exc.OperationalError,
    kombu.exceptions.OperationalError,
    OSError,
)


class NodeLock:
    """A lock kept from pass to pass by the thread of one node."""

    def __init__(self, client: redis.Redis, key: str, timeout: float) -> None:
        # Not thread-local: it is made in the worker's main thread and used in another.
        self.lock = Lock(client, key, timeout=timeout, thread_local=False)

    def hold(self) -> bool:
        """Renew the lock if this node holds it, else try to take it; whether it is held."""
        if self.lock.local.token is not None:
            try:
                self.lock.reacquire()
                return True
            except redis.exceptions.LockError:
                self.lock.local.token = None  # lost: take it anew
        return bool(self.lock.acquire(blocking=False))

    def release(self) -> None:
        """Let another node take it at once (nothing to do when it is gone with Redis)."""
        try:
            if self.lock.owned():
                self.lock.release()
        except redis.RedisError:
            pass


class LockedLoop:
    """A loop whose passes run on one node at a time: a pass every ``interval`` seconds
    while this node holds the lock ``key``."""

    #: What its log lines call it.
    name = "loop"

    def __init__(self, client: redis.Redis, key: str, *, timeout: float, interval: float) -> None:
        self.lock = NodeLock(client, key, timeout=timeout)
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        """Pass after pass until ``stopping`` is set; the node's pool never forks mid-pass."""
        while not self.stopping.wait(self.interval):
            with no_fork():
                self.run_once()

    def run_once(self) -> Any:
        """One pass if this node holds the lock, and what it returned; None when another
        node works, a service is away or the pass failed (logged)."""
        try:
            if not self.lock.hold():
                return None
            return self.work()
        except SERVICE_ERRORS as exc:
            self.service_away(exc)
        except Exception:
            log.exception("%s failed", self.name)
        return None

    def work(self) -> Any:
        """One pass's work."""
        raise NotImplementedError

    def service_away(self, exc: BaseException) -> None:
        """A pass met a service that is away: logged quietly, the next pass tries again."""
        log.debug("%s skipped: %s", self.name, exc)

    def release(self) -> None:
        """Let another node work at once."""
        self.lock.release()


class NodeLoop(Protocol):
    """A loop a node runs in a thread until ``stopping`` is set."""

    stopping: threading.Event

    def run(self) -> None: ...

    def release(self) -> None: ...


class NodeLoopStep(bootsteps.StartStopStep):
    """Worker bootstep: runs the loop ``make_loop`` gives (if any) in a daemon thread."""

    requires = {"celery.worker.components:Pool"}
    thread_name = "batch-loop"
    #: How long stopping waits for a pass in progress.
    join_seconds = 10.0

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.loop: NodeLoop | None = None
        self.thread: threading.Thread | None = None

    def make_loop(self, worker: Any) -> NodeLoop | None:
        """The loop to run, on connections of its own; None when it is turned off."""
        raise NotImplementedError

    def start(self, worker: Any) -> None:
        self.loop = self.make_loop(worker)
        if self.loop is None:
            return
        self.thread = threading.Thread(target=self.loop.run, name=self.thread_name, daemon=True)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.loop is None or self.thread is None:
            return
        self.loop.stopping.set()
        self.thread.join(timeout=self.join_seconds)
        self.loop.release()
