"""Beat: RedBeat's scheduler with a batched tick (batch/firing.py), reconcile passes that make
Redis follow the SQL schedules (batch/reconcile.py), and a lock ridden through outages.

Start it with ``celery -A batch.worker beat --scheduler batch.beat:BatchScheduler``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock
from sqlalchemy.exc import DBAPIError

from batch import health
from batch.db import utcnow
from batch.entries import REDIS_ERRORS, BatchEntry
from batch.firing import FIRE_BATCH, Firing
from batch.reconcile import exit_with_parent, full_reconcile_in_process, reconcile
from batch.settings import Settings
from batch.watchdog import Watchdog

log = logging.getLogger(__name__)

#: How often beat tries again while Redis or the broker does not answer.
RETRY_SECONDS = 1.0
#: The longest sleep between ticks while a full reconcile pass is pending or running.
RESTORE_POLL_SECONDS = 0.1
#: A tick that may sleep this long first decodes the entries due within the horizon.
WARM_UP_IDLE_SECONDS = 0.2
WARM_UP_HORIZON_SECONDS = 10.0
#: A busy tick (beat never idles at 100,000 schedules) warms up this many entries at most,
#: at most this often: up to 2,500 entries a second coming ready, each slice a few ms.
WARM_SLICE = 250
WARM_SLICE_SECONDS = 0.1
#: The shortest time between two extensions of the beat lock.
LOCK_EXTEND_SECONDS = 0.25
#: How often the active beat reports that it ticks (batch/health.py).
HEALTH_REPORT_SECONDS = 1.0


class BatchScheduler(RedBeatScheduler):
    """RedBeat's scheduler, firing due entries in batches, with reconcile passes beside it.

    It keeps RedBeat's lock (one active beat, a standby that takes over), renews it at most
    every 0.25 s (a long burst is many short ticks), and rides out a Redis or broker that does not
    answer (one warning, a retry every second) and a lost lock (taken again, or waited for).
    """

    Entry = BatchEntry

    #: Whether the lock must be taken (again) before the next tick may fire anything.
    _lock_wanted = False
    #: When Redis stopped answering (monotonic), while it does not answer.
    _redis_lost_at: float | None = None
    _standby_logged = False
    _fires: Firing | None = None
    #: When this beat last extended its lock, and last warmed entries up (monotonic).
    _lock_extended_at = 0.0
    _warmed_at = 0.0
    #: When this beat last reported its tick (monotonic).
    _reported_at = 0.0

    def setup_schedule(self) -> None:
        self._stopping = threading.Event()
        # Set: the reconcile thread's next pass is a full one, now. The first one is.
        self._reconcile_now = threading.Event()
        # Set from that request until the full pass is over: the entries may be missing (a
        # flush), so the tick polls often enough to fire what the pass writes back on time.
        self._full_pass_pending = threading.Event()
        self._want_full_pass()
        self._full_passes: ProcessPoolExecutor | None = None
        self._broker_errors = self.app.connection_for_write().connection_errors
        # Beat watches the workers (no worker on a queue with a fire due): they cannot.
        self._watchdog = Watchdog(watch_beat=False)
        try:
            super().setup_schedule()
        except REDIS_ERRORS as exc:
            # Beat starts anyway: the first tick that reaches Redis takes the lock and reconciles.
            self._redis_unreachable(exc)
        threading.Thread(
            target=self._reconcile_forever, name="batch-reconcile", daemon=True
        ).start()

    def _reconcile_forever(self) -> None:
        # A thread, so that reading SQL never delays a tick; full passes in a process.
        settings = self.app.batch_core.settings
        interval = settings.reconcile_interval_seconds
        next_full = 0.0
        while not self._stopping.is_set():
            full = self._reconcile_now.is_set() or time.monotonic() >= next_full
            self._reconcile_now.clear()
            try:
                if full:
                    next_full = time.monotonic() + settings.full_reconcile_interval_seconds
                    try:
                        log.info("reconciled RedBeat with SQL: %s", self._full_pass(settings))
                        self._report(health.FULLY_RECONCILED)
                    finally:
                        if not self._reconcile_now.is_set():
                            self._full_pass_pending.clear()
                else:
                    reconcile(self.app.batch_core, self.app)
                self._report(health.RECONCILED)
                self._watch()
            except (*REDIS_ERRORS, LockNotOwnedError, DBAPIError) as exc:
                # An outage, not a bug: one line per pass (a flush mid-pass takes the schedule
                # lock with it). The tick wakes this thread as soon as Redis answers again.
                log.warning("reconcile failed (%s); retrying in %ss", exc, interval)
                next_full = 0.0
            except Exception:
                if self._stopping.is_set():
                    return  # beat is closing, and stopped the pass in progress
                log.exception("reconcile failed; retrying in %ss", interval)
                next_full = 0.0
            self._reconcile_now.wait(interval)

    def _watch(self) -> None:
        try:
            self._watchdog.check(self.app.batch_core, self.app, utcnow())
        except (*REDIS_ERRORS, DBAPIError) as exc:
            log.warning("watchdog skipped (%s)", exc)
        except Exception:
            log.exception("watchdog failed")

    def _want_full_pass(self) -> None:
        self._full_pass_pending.set()
        self._reconcile_now.set()

    def _full_pass(self, settings: Settings) -> dict[str, Any]:
        """A full reconcile in beat's reconcile process (started at the first pass)."""
        if self._full_passes is None:
            self._full_passes = ProcessPoolExecutor(
                1, get_context("spawn"), initializer=exit_with_parent, initargs=(os.getpid(),)
            )
        try:
            return self._full_passes.submit(full_reconcile_in_process, settings).result()
        except BrokenProcessPool:
            self._full_passes = None  # the process died (killed?): a new one next pass
            raise

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Fire one batch of due entries; the seconds until the next tick."""
        try:
            if not self._hold_lock():
                return self.max_interval  # a standby polls the lock every tick
            self._extend_lock()
            if self._firing().fire_due(self.producer) >= FIRE_BATCH:
                interval = 0.0  # more are due: the next tick renews the lock and goes on
            else:
                interval = self._firing().seconds_to_next(self.max_interval)
                if self._full_pass_pending.is_set():
                    interval = min(interval, RESTORE_POLL_SECONDS)
                interval = self._warm_up(interval)
            if time.monotonic() - self._reported_at >= HEALTH_REPORT_SECONDS:
                self._report(health.TICKED)
                self._reported_at = time.monotonic()
        except LockNotOwnedError:
            # Redis lost our lock (a flush or restart: it lost the schedule too), or it expired
            # and another beat took it. Take it back, or wait as a standby behind that beat.
            self._redis_answers()
            log.warning("beat lock lost: Redis was flushed or restarted, or the lock expired")
            self._lock_wanted = True
            return 0.0
        except REDIS_ERRORS as exc:
            # The fires of this step were not recorded: they are still due, and go out once
            # Redis answers (a fire already sent is sent again; its run is created once).
            self._redis_unreachable(exc)
            self._reset_producer()
            return RETRY_SECONDS
        except self._broker_errors as exc:
            log.warning("beat: broker unreachable (%s); retrying in %ss", exc, RETRY_SECONDS)
            self._reset_producer()
            return RETRY_SECONDS
        self._redis_answers()
        return interval

    def _report(self, moment: str) -> None:
        health.record(get_redis(self.app), moment, utcnow())

    def _warm_up(self, interval: float) -> float:
        """Get the entries coming due ready ahead: a batch when idle until the next fire (a
        burst at :00), a slice now and then when busy; what is left of ``interval``."""
        started = time.monotonic()
        if interval >= WARM_UP_IDLE_SECONDS:
            limit = None
        elif started - self._warmed_at >= WARM_SLICE_SECONDS:
            limit = WARM_SLICE
        else:
            return interval
        self._firing().warm_up(self.producer, WARM_UP_HORIZON_SECONDS, limit)
        self._warmed_at = time.monotonic()
        return max(0.0, interval - (self._warmed_at - started))

    def _extend_lock(self) -> None:
        # At most every LOCK_EXTEND_SECONDS, not every tick: under load beat ticks a hundred
        # times a second. The lock can only expire after a stretch far longer than that, so
        # the first tick after any such stretch extends it (or finds it lost) before firing.
        if time.monotonic() - self._lock_extended_at >= LOCK_EXTEND_SECONDS:
            self.lock.extend(int(self.lock_timeout))
            self._lock_extended_at = time.monotonic()

    def _firing(self) -> Firing:
        if self._fires is None:
            self._fires = Firing(self.app, get_redis(self.app), BatchEntry.decode_definition)
        return self._fires

    def _reset_producer(self) -> None:
        # The next tick connects again and declares the queues on the new connection.
        producer = self.__dict__.pop("producer", None)
        if producer is not None:
            producer.release()
        connection = self.__dict__.pop("connection", None)
        if connection is not None:
            connection.collect()
        if self._fires is not None:
            self._fires.forget_connection()

    def _hold_lock(self) -> bool:
        """Whether this beat holds the lock, taking it now if it is wanted and free."""
        if self.lock is None:
            # RedBeat's start-up handler could not take it: Redis did not answer then.
            self.lock = self._new_lock()
            self._lock_wanted = True
        if not self._lock_wanted:
            return True
        if not self.lock.acquire(blocking=False):
            if not self._standby_logged:
                log.info("beat: another beat holds the lock; waiting as standby")
                self._standby_logged = True
            return False
        self._lock_wanted = self._standby_logged = False
        log.info("beat: lock re-acquired, reconciling schedules")
        self._want_full_pass()
        return True

    def _new_lock(self) -> Lock:
        # As RedBeat's acquire_distributed_beat_lock builds it, with its extend script.
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        return lock

    def _redis_unreachable(self, exc: Exception) -> None:
        if self._redis_lost_at is None:
            self._redis_lost_at = time.monotonic()
            log.warning("beat: Redis unreachable (%s); retrying every %ss", exc, RETRY_SECONDS)
        else:
            log.debug("beat: Redis still unreachable (%s)", exc)

    def _redis_answers(self) -> None:
        if self._redis_lost_at is None:
            return
        down = time.monotonic() - self._redis_lost_at
        self._redis_lost_at = None
        log.info("beat: Redis answers again after %.0fs; reconciling schedules", down)
        self._want_full_pass()

    def close(self) -> None:
        stopping = getattr(self, "_stopping", None)
        if stopping is not None:
            stopping.set()
            self._reconcile_now.set()
        passes = getattr(self, "_full_passes", None)
        if passes is not None:
            # Stop a pass in progress (it is idempotent), then wait for the pool's manager
            # thread: left running, it races Python's exit hook for the pool, which then
            # writes to a pipe the thread just closed and prints an OSError traceback.
            for process in list((getattr(passes, "_processes", None) or {}).values()):
                process.kill()
            passes.shutdown(wait=True, cancel_futures=True)
            self._full_passes = None
        try:
            super().close()
        except REDIS_ERRORS as exc:
            log.warning("beat: lock not released (%s); it expires by itself", exc)
            self.lock = None  # Celery may close twice: say it once
