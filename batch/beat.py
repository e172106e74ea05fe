"""RedBeat, extended: our schedule types, exact zset scores, fire times in each message,
and a reconcile step that makes Redis match the SQL schedules.

Start it with ``celery -A batch.worker beat --scheduler batch.beat:BatchScheduler``.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from typing import Any

from celery import Celery
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry, get_redis
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock
from sqlalchemy import func, select

from batch.celery_app import message_priority
from batch.constants import SCHEDULE_LOCK_KEY, TASK_START_RUN
from batch.core import Core
from batch.cron import CronSchedule, FireTimes, IntervalSchedule, make_schedule
from batch.db import utcnow
from batch.exceptions import UserError
from batch.models import Run, Schedule

log = logging.getLogger(__name__)

SCHEDULE_LOCK_SECONDS = 120
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
    """RedBeat's scheduler with reconcile at start and every minute, and fire times sent."""

    Entry = BatchEntry

    def setup_schedule(self) -> None:
        super().setup_schedule()
        core: Core = self.app.batch_core
        reconcile(core, self.app)
        self._stopping = threading.Event()
        self._reconcile_now = threading.Event()
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
            except Exception:
                log.exception("reconcile failed; retrying in %ss", interval)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return super().tick(*args, **kwargs)
        except LockNotOwnedError:
            # Redis lost our lock (a flush or restart): it lost the schedule too. Take the
            # lock back (or wait as a standby behind the beat that took it) and reconcile.
            log.warning("beat lock lost: Redis was flushed or restarted; re-acquiring")
            self.lock.acquire()
            log.info("beat: lock re-acquired, reconciling schedules")
            self._reconcile_now.set()
            return 1.0

    def reserve(self, entry: BatchEntry) -> BatchEntry:
        """Advance the entry to the fire time being sent and put that time in the message."""
        if not isinstance(entry.schedule, FireTimes):
            return super().reserve(entry)
        fire_at = entry.schedule.latest_due(entry.last_run_at, utcnow())
        new_entry = entry._next_instance(last_run_at=fire_at)
        new_entry.kwargs = {**entry.kwargs, "scheduled_for": fire_at.isoformat()}
        return new_entry

    def close(self) -> None:
        stopping = getattr(self, "_stopping", None)
        if stopping is not None:
            stopping.set()
            self._reconcile_now.set()
        super().close()
