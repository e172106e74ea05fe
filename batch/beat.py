"""RedBeat, extended: our schedule types, exact zset scores, fire times in each message,
and a reconcile step that makes Redis match the SQL schedules.

Start it with ``celery -A batch.worker beat --scheduler batch.beat:BatchScheduler``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from typing import Any

from celery import Celery
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import (
    LUA_EXTEND_TO_SCRIPT,
    RedBeatScheduler,
    RedBeatSchedulerEntry,
    get_redis,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockNotOwnedError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.lock import Lock
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from batch.celery_app import message_priority
from batch.constants import SCHEDULE_LOCK_KEY, TASK_START_RUN
from batch.core import Core
from batch.cron import CronSchedule, FireTimes, IntervalSchedule, make_schedule
from batch.db import utcnow
from batch.exceptions import UserError
from batch.models import Run, Schedule
from batch.runs import sent_at_header

log = logging.getLogger(__name__)

SCHEDULE_LOCK_SECONDS = 120
#: Redis errors that mean "not reachable now" (a restart, a network cut), not a bug.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)
#: How often beat tries again while Redis does not answer.
REDIS_RETRY_SECONDS = 1.0
#: How often the lock is renewed during one long tick (a burst of due entries).
LOCK_RENEW_SECONDS = 1.0
CRON_TYPE = "batch.cron"
INTERVAL_TYPE = "batch.interval"


class ScheduleEncoder(RedBeatJSONEncoder):
    """RedBeat's JSON encoder plus our two schedule types."""

    def default(self, obj: Any) -> Any:
        if isinstance(obj, CronSchedule):
            return {"__type__": CRON_TYPE, "cron": obj.cron, "timezone": obj.timezone}
        if isinstance(obj, IntervalSchedule):
            return {"__type__": INTERVAL_TYPE, "seconds": obj.seconds}
        return super().default(obj)


def _decode_schedule(value: Any) -> Any:
    if isinstance(value, dict) and value.get("__type__") == CRON_TYPE:
        return CronSchedule(value["cron"], value["timezone"])
    if isinstance(value, dict) and value.get("__type__") == INTERVAL_TYPE:
        return IntervalSchedule(value["seconds"])
    return value


class BatchEntry(RedBeatSchedulerEntry):
    """A RedBeat entry whose zset score is its true next fire time."""

    @staticmethod
    def decode_definition(definition: str) -> dict[str, Any]:
        decoded = json.loads(definition, cls=RedBeatJSONDecoder)
        decoded["schedule"] = _decode_schedule(decoded.get("schedule"))
        return decoded

    @property
    def due_at(self) -> datetime | None:
        # RedBeat 2.4.2 adds a remaining time counted from now to the last run time,
        # which scores an entry with an old last run too early; ours is exact.
        if self.last_run_at is None:
            return self._default_now()
        if isinstance(self.schedule, FireTimes):
            return self.schedule.next_after(self.last_run_at)
        return super().due_at

    def definition_json(self) -> str:
        """The entry's definition as RedBeat stores it, encoded with our schedule types."""
        definition = {
            "name": self.name,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "schedule": self.schedule,
            "enabled": self.enabled,
        }
        return json.dumps(definition, cls=ScheduleEncoder)

    def save(self) -> BatchEntry:
        """Write definition, meta (only if absent) and score, like RedBeat with our encoder."""
        meta = {"last_run_at": self.last_run_at}
        with get_redis(self.app).pipeline() as pipe:
            pipe.hset(self.key, "definition", self.definition_json())
            pipe.hsetnx(self.key, "meta", json.dumps(meta, cls=ScheduleEncoder))
            pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})
            pipe.execute()
        return self


def entry_for(celery: Celery, row: Schedule, last_run_at: datetime | None) -> BatchEntry:
    """The RedBeat entry derived from a SQL schedule row."""
    kwargs: dict[str, Any] = {
        "job": row.job,
        "params": row.params,
        "trigger": f"schedule:{row.name}",
        "schedule": row.name,
        "overlap": row.overlap,
        "deadline_seconds": row.deadline_seconds,
    }
    options: dict[str, Any] = {"queue": row.queue or celery.batch_core.jobs.get(row.job).queue}
    if row.priority is not None:
        options["priority"] = message_priority(celery, row.priority)
    schedule = make_schedule(
        cron=row.cron, timezone=row.timezone, interval_seconds=row.interval_seconds
    )
    return BatchEntry(
        name=row.name,
        task=TASK_START_RUN,
        schedule=schedule,
        kwargs=kwargs,
        options=options,
        enabled=True,
        last_run_at=last_run_at,
        app=celery,
    )


def write_entry(celery: Celery, row: Schedule) -> None:
    """Write one schedule through to RedBeat, keeping its last fire time if it has one."""
    if not row.enabled:
        delete_entry(celery, row.name)
        return
    key = BatchEntry.generate_key(celery, row.name)
    last_run_at = BatchEntry.load_meta(key, app=celery).get("last_run_at")
    entry_for(celery, row, last_run_at or utcnow()).save()


def last_fire_times(celery: Celery, names: list[str]) -> dict[str, datetime | None]:
    """Each named schedule's last fire time as RedBeat holds it, in one Redis round trip."""
    with get_redis(celery).pipeline() as pipe:
        for name in names:
            pipe.hget(BatchEntry.generate_key(celery, name), "meta")
        metas = pipe.execute()
    return {
        name: BatchEntry.decode_meta(meta).get("last_run_at")
        for name, meta in zip(names, metas, strict=True)
    }


def delete_entry(celery: Celery, name: str) -> None:
    """Remove a schedule's RedBeat entry (no-op if absent)."""
    BatchEntry(name=name, app=celery).delete()


def schedule_lock(celery: Celery) -> Lock:
    """The lock held while SQL schedules and RedBeat entries are changed together.

    Edits hold it across their SQL commit and Redis write, and reconcile across its SQL
    read and Redis writes, so reconcile never works from a snapshot older than an edit.
    """
    return get_redis(celery).lock(
        SCHEDULE_LOCK_KEY, timeout=SCHEDULE_LOCK_SECONDS, blocking_timeout=SCHEDULE_LOCK_SECONDS
    )


def reconcile(core: Core, celery: Celery) -> dict[str, int]:
    """Make the RedBeat entries match the enabled SQL schedules; returns counts.

    An entry that lost its meta (a Redis flush) gets back the newest fire time recorded
    in SQL, so it neither fires at once nor skips its next fire. Entries already in Redis
    as SQL wants them are left alone, so a fire racing this pass keeps its own score.
    """
    client = get_redis(celery)
    with schedule_lock(celery):
        with core.reading() as session:
            rows = session.scalars(select(Schedule).where(Schedule.enabled)).all()
            last_fires = dict(
                session.execute(
                    select(Run.schedule_name, func.max(Run.scheduled_for))
                    .where(Run.schedule_name.is_not(None))
                    .group_by(Run.schedule_name)
                ).all()
            )
        wanted = {BatchEntry.generate_key(celery, row.name): row for row in rows}
        with client.pipeline() as pipe:
            for key in wanted:
                pipe.hmget(key, "definition", "meta")
            stored = pipe.execute()
        restored = rewritten = 0
        for (_key, row), (definition, meta) in zip(wanted.items(), stored, strict=True):
            last_run_at = BatchEntry.decode_meta(meta).get("last_run_at")
            if last_run_at is None:
                restored += 1
                last_run_at = last_fires.get(row.name) or row.updated_at
            try:
                entry = entry_for(celery, row, last_run_at)
            except UserError as exc:
                log.error("schedule %s not written to RedBeat: %s", row.name, exc)
                continue
            if meta is None or definition != entry.definition_json():
                rewritten += 1
                entry.save()
        schedule_key = celery.redbeat_conf.schedule_key
        stale = [key for key in client.zrange(schedule_key, 0, -1) if key not in wanted]
        for key in stale:
            with client.pipeline() as pipe:
                pipe.zrem(schedule_key, key)
                pipe.delete(key)
                pipe.execute()
    counts = {
        "schedules": len(wanted),
        "rewritten": rewritten,
        "restored": restored,
        "removed": len(stale),
    }
    log.info("reconciled RedBeat with SQL: %s", counts)
    return counts


class BatchScheduler(RedBeatScheduler):
    """RedBeat's scheduler with reconcile at start and every minute, and fire times sent.

    It also rides out a Redis that does not answer (one warning, a retry every second) and
    a lost lock (taken again, or waited for as a standby), and renews the lock during a long
    tick, so that the lock timeout can be short and a standby takes over fast.
    """

    Entry = BatchEntry

    #: Whether the lock must be taken (again) before the next tick may fire anything.
    _lock_wanted = False
    #: When the lock was last extended (monotonic), to renew it during a long tick.
    _lock_extended_at = 0.0
    #: When Redis stopped answering (monotonic), while it does not answer.
    _redis_lost_at: float | None = None
    _standby_logged = False
    #: A Redis error met while sending a fire, which ends the tick.
    _redis_error: Exception | None = None

    def setup_schedule(self) -> None:
        core: Core = self.app.batch_core
        self._stopping = threading.Event()
        self._reconcile_now = threading.Event()
        try:
            super().setup_schedule()
            reconcile(core, self.app)
        except REDIS_ERRORS as exc:
            # Beat starts anyway: the first tick that reaches Redis takes the lock and reconciles.
            self._redis_unreachable(exc)
        thread = threading.Thread(
            target=self._reconcile_forever,
            args=(core.settings.reconcile_interval_seconds,),
            name="batch-reconcile",
            daemon=True,
        )
        thread.start()

    def _reconcile_forever(self, interval: int) -> None:
        # A thread, so that reading SQL never delays a tick.
        while not self._stopping.is_set():
            self._reconcile_now.wait(interval)
            self._reconcile_now.clear()
            if self._stopping.is_set():
                return
            try:
                reconcile(self.app.batch_core, self.app)
            except (*REDIS_ERRORS, DBAPIError) as exc:
                # An outage, not a bug: one line per pass. The tick wakes this thread as soon
                # as Redis answers again.
                log.warning("reconcile failed (%s); retrying in %ss", exc, interval)
            except Exception:
                log.exception("reconcile failed; retrying in %ss", interval)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            if self._hold_lock():
                self._lock_extended_at = time.monotonic()
                interval = super().tick(*args, **kwargs)
                self._end_tick_if_redis_failed()
            else:
                interval = self.max_interval  # a standby polls the lock every tick
        except LockNotOwnedError:
            # Redis lost our lock (a flush or restart: it lost the schedule too), or it expired
            # and another beat took it. Take it back, or wait as a standby behind that beat.
            self._redis_answers()
            log.warning("beat lock lost: Redis was flushed or restarted, or the lock expired")
            self._lock_wanted = True
            return 0.0
        except REDIS_ERRORS as exc:
            self._redis_unreachable(exc)
            return REDIS_RETRY_SECONDS
        self._redis_answers()
        return interval

    def maybe_due(self, entry: BatchEntry, **kwargs: Any) -> float:
        self._end_tick_if_redis_failed()
        # A burst of due entries makes a long tick: renew the lock as it goes, so the lock
        # timeout bounds one step and not a whole tick; a beat whose lock was taken stops here.
        if time.monotonic() - self._lock_extended_at >= LOCK_RENEW_SECONDS:
            self.lock.extend(int(self.lock_timeout))
            self._lock_extended_at = time.monotonic()
        return super().maybe_due(entry, **kwargs)

    def apply_async(self, entry: BatchEntry, *args: Any, **kwargs: Any) -> Any:
        """Reserve and send one fire; a Redis error while reserving ends the tick."""
        try:
            return super().apply_async(entry, *args, **kwargs)
        except REDIS_ERRORS as exc:
            # Redis went away mid-tick: the entry was not advanced, so nothing was sent and the
            # fire is still due. RedBeat's maybe_due would log it with a traceback and go on
            # to fail (each after redis-py's retries) for every other due entry.
            self._redis_error = exc
            return None

    def _end_tick_if_redis_failed(self) -> None:
        error, self._redis_error = self._redis_error, None
        if error is not None:
            raise error

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
        self._reconcile_now.set()
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
            log.warning(
                "beat: Redis unreachable (%s); retrying every %ss", exc, REDIS_RETRY_SECONDS
            )
        else:
            log.debug("beat: Redis still unreachable (%s)", exc)

    def _redis_answers(self) -> None:
        if self._redis_lost_at is None:
            return
        down = time.monotonic() - self._redis_lost_at
        self._redis_lost_at = None
        log.info("beat: Redis answers again after %.0fs; reconciling schedules", down)
        self._reconcile_now.set()

    def reserve(self, entry: BatchEntry) -> BatchEntry:
        """Advance the entry to the fire time being sent and put that time in the message."""
        if not isinstance(entry.schedule, FireTimes):
            return super().reserve(entry)
        fire_at = entry.schedule.latest_due(entry.last_run_at, utcnow())
        new_entry = entry._next_instance(last_run_at=fire_at)
        new_entry.kwargs = {**entry.kwargs, "scheduled_for": fire_at.isoformat()}
        # Its send time, as every start and chunk message carries it: the recovery sweep reads
        # it at the head of a queue to tell which older messages have left it.
        new_entry.options = {**entry.options, **sent_at_header(utcnow())}
        return new_entry

    def close(self) -> None:
        stopping = getattr(self, "_stopping", None)
        if stopping is not None:
            stopping.set()
            self._reconcile_now.set()
        try:
            super().close()
        except REDIS_ERRORS as exc:
            log.warning("beat: lock not released (%s); it expires by itself", exc)
            self.lock = None  # Celery may close twice: say it once
