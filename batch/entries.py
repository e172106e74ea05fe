"""RedBeat entries derived from SQL schedule rows: our schedule types in RedBeat's JSON, exact
zset scores, and the writes an edit makes through to Redis under the schedule lock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from celery import Celery
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import RedBeatSchedulerEntry, get_redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.lock import Lock

from batch.celery_app import message_priority
from batch.constants import SCHEDULE_LOCK_KEY, TASK_START_RUN
from batch.cron import CronSchedule, FireTimes, IntervalSchedule, make_schedule
from batch.db import utcnow
from batch.models import Schedule

SCHEDULE_LOCK_SECONDS = 120
#: Redis errors that mean "not reachable now" (a restart, a network cut), not a bug.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)
CRON_TYPE = "batch.cron"
INTERVAL_TYPE = "batch.interval"


#: One of each, reused: ``json.loads(text, cls=...)`` builds a new decoder per call, and beat
#: decodes and encodes thousands of metas a minute.
_REDBEAT_DECODER = RedBeatJSONDecoder()
_REDBEAT_ENCODER = RedBeatJSONEncoder()


def decode_redbeat_json(text: str) -> Any:
    """RedBeat's JSON (its datetimes and schedules) to Python values."""
    return _REDBEAT_DECODER.decode(text)


def encode_redbeat_json(value: Any) -> str:
    """Python values to RedBeat's JSON, as ``json.dumps(value, cls=RedBeatJSONEncoder)``."""
    return _REDBEAT_ENCODER.encode(value)


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
    def decode_meta(meta: str | None, app: Celery | None = None) -> dict[str, Any]:
        """RedBeat's ``decode_meta`` with one shared decoder (it builds one per call)."""
        if not meta:
            return {"last_run_at": None}
        values: dict[str, Any] = decode_redbeat_json(meta)
        return values

    @staticmethod
    def decode_definition(definition: str) -> dict[str, Any]:
        decoded = decode_redbeat_json(definition)
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
        with get_redis(self.app).pipeline() as pipe:
            self.save_in(pipe)
            pipe.execute()
        return self

    def save_in(self, pipe: Pipeline) -> None:
        """Queue what ``save`` writes on ``pipe`` (the caller executes it)."""
        meta = json.dumps({"last_run_at": self.last_run_at}, cls=ScheduleEncoder)
        pipe.hset(self.key, "definition", self.definition_json())
        pipe.hsetnx(self.key, "meta", meta)
        pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})


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


#: Metas read per Redis call by last_fire_times: a call blocks Redis for its length.
READ_BATCH = 1000
# KEYS: entry keys. Returns each entry's meta (nil when it has none): one script call costs
# half a pipeline of one HGET per key, and the admin's list reads 50 on every page.
READ_METAS = """
local metas = {}
for i, key in ipairs(KEYS) do metas[i] = redis.call('HGET', key, 'meta') end
return metas
"""


def last_fire_times(celery: Celery, names: list[str]) -> dict[str, datetime | None]:
    """Each named schedule's last fire time as RedBeat holds it: one Redis call per
    READ_BATCH names."""
    read_metas = get_redis(celery).register_script(READ_METAS)
    fires: dict[str, datetime | None] = {}
    for start in range(0, len(names), READ_BATCH):
        batch = names[start : start + READ_BATCH]
        metas = read_metas(keys=[BatchEntry.generate_key(celery, name) for name in batch])
        for name, meta in zip(batch, metas, strict=True):
            fires[name] = BatchEntry.decode_meta(meta).get("last_run_at")
    return fires


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


#: Entries written or deleted per Redis pipeline by the bulk helpers.
WRITE_BATCH = 1000


def write_entries(celery: Celery, rows: Sequence[Any]) -> None:
    """``write_entry`` for many schedules: their metas read in one round trip, the writes
    pipelined (each entry keeps its last fire time; a disabled schedule's entry is deleted).

    ``rows`` are schedule rows, or anything with their attributes (a schedule's new values).
    """
    last_fires = last_fire_times(celery, [row.name for row in rows if row.enabled])
    now = utcnow()
    for start in range(0, len(rows), WRITE_BATCH):
        with get_redis(celery).pipeline(transaction=False) as pipe:
            for row in rows[start : start + WRITE_BATCH]:
                if row.enabled:
                    entry = entry_for(celery, row, last_fires[row.name] or now)
                    entry.save_in(pipe)
                else:
                    delete_in(pipe, celery, row.name)
            pipe.execute()


def delete_entries(celery: Celery, names: Sequence[str]) -> None:
    """``delete_entry`` for many schedules, pipelined."""
    for start in range(0, len(names), WRITE_BATCH):
        with get_redis(celery).pipeline() as pipe:
            for name in names[start : start + WRITE_BATCH]:
                delete_in(pipe, celery, name)
            pipe.execute()


def delete_in(pipe: Pipeline, celery: Celery, name: str) -> None:
    """Queue on ``pipe`` what RedBeat's ``entry.delete`` does: the zset member and the hash."""
    key = BatchEntry.generate_key(celery, name)
    pipe.zrem(celery.redbeat_conf.schedule_key, key)
    pipe.delete(key)
