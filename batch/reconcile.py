"""Reconcile: make the RedBeat entries follow the SQL schedules, which are the truth.

Edits write through to Redis after their commit; reconcile repairs what that missed (a Redis
flush or restart, a process that died between its commit and its Redis write, an edit made
straight in SQL). It has two passes:

- A **changes** pass applies the ``schedule_changes`` notes written after the revision the
  last pass reached. That revision is kept in Redis beside the entries, so a flush that loses
  the entries loses it too and forces a full pass. It costs what changed, not what exists.
- A **full** pass compares every enabled schedule with its entry and removes entries no
  schedule wants. Beat runs it at start, after it takes the lock back or Redis answers again,
  when the reached revision is missing or older than the oldest note, and every
  ``BATCH_FULL_RECONCILE_INTERVAL_SECONDS``; in a process of its own, so that it never
  competes with the tick for the GIL. It prunes the notes it has covered.

Both hold the schedule lock, as edits do across their commit and Redis write: a pass never
works from a snapshot older than an edit, and every note up to the revision it read is
committed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from celery import Celery
from redbeat.schedulers import get_redis
from redis import Redis
from redis.client import Pipeline
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from batch.constants import RECONCILED_REVISION_KEY
from batch.core import Core
from batch.db import utcnow
from batch.entries import BatchEntry, delete_in, entry_for, schedule_lock
from batch.exceptions import UserError
from batch.models import Run, Schedule, ScheduleChange
from batch.settings import Settings

log = logging.getLogger(__name__)

#: Schedules read from SQL and compared in Redis per round trip.
READ_BATCH = 1000


def record_changes(session: Session, names: Iterable[str]) -> None:
    """Note, in the writing transaction, that these schedules changed (one executemany)."""
    now = utcnow()
    rows = [{"name": name, "changed_at": now} for name in names]
    if rows:
        session.execute(insert(ScheduleChange), rows)


def reconcile(core: Core, celery: Celery, *, full: bool = False) -> dict[str, Any]:
    """Make RedBeat follow SQL: the changes since the last pass, or everything; the counts."""
    client = get_redis(celery)
    with schedule_lock(celery):
        with core.reading() as session:
            oldest, newest = session.execute(
                select(func.min(ScheduleChange.revision), func.max(ScheduleChange.revision))
            ).one()
            reached = client.get(RECONCILED_REVISION_KEY)
            # The oldest note is the one the last full pass kept: a Redis short of it may miss
            # pruned notes (one restored from an old copy); a new or flushed one has no revision.
            if reached is None or (oldest is not None and int(reached) < oldest - 1):
                full = True
            if full:
                rows = list(session.scalars(select(Schedule).where(Schedule.enabled)))
                names = {row.name for row in rows} | _names_in_redbeat(celery, client)
            else:
                changed = select(ScheduleChange.name).where(ScheduleChange.revision > int(reached))
                names = set(session.scalars(changed.distinct()))
                rows = _enabled_rows(session, names)
        counts = _follow(core, celery, client, {row.name: row for row in rows}, names)
        client.set(RECONCILED_REVISION_KEY, newest or 0)
    if full and newest is not None:
        with core.transaction() as session:
            # Every note up to the newest is now in Redis; keep that one, so the oldest
            # revision tells a Redis restored from before this pass (it must pass in full).
            session.execute(delete(ScheduleChange).where(ScheduleChange.revision < newest))
    counts = {"pass": "full" if full else "changes", **counts}
    level = (
        logging.INFO if full or any(counts[k] for k in ("rewritten", "removed")) else logging.DEBUG
    )
    log.log(level, "reconciled RedBeat with SQL: %s", counts)
    return counts


def full_reconcile_in_process(settings: Settings) -> dict[str, Any]:
    """A full pass, for beat's reconcile process (which has no app of its own yet)."""
    global _process_app
    if _process_app is None:
        from batch.celery_app import create_celery

        core = Core(settings)
        _process_app = (core, create_celery(settings, core))
    core, celery = _process_app
    return reconcile(core, celery, full=True)


_process_app: tuple[Core, Celery] | None = None


def exit_with_parent(parent_pid: int) -> None:
    """Start a thread that ends this process once ``parent_pid`` is gone (``kill -9``)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _names_in_redbeat(celery: Celery, client: Redis) -> set[str]:
    prefix = celery.redbeat_conf.key_prefix
    keys = client.zrange(celery.redbeat_conf.schedule_key, 0, -1)
    return {key[len(prefix) :] for key in keys if key.startswith(prefix)}


def _enabled_rows(session: Session, names: set[str]) -> list[Schedule]:
    ordered = sorted(names)
    rows: list[Schedule] = []
    for start in range(0, len(ordered), READ_BATCH):
        part = ordered[start : start + READ_BATCH]
        rows += session.scalars(select(Schedule).where(Schedule.enabled, Schedule.name.in_(part)))
    return rows


def _follow(
    core: Core, celery: Celery, client: Redis, wanted: dict[str, Schedule], names: set[str]
) -> dict[str, int]:
    """Write the entries of ``names`` that differ from ``wanted`` and delete the unwanted."""
    schedule_key = celery.redbeat_conf.schedule_key
    counts = {"schedules": len(wanted), "rewritten": 0, "restored": 0, "removed": 0}
    ordered = sorted(names)
    for start in range(0, len(ordered), READ_BATCH):
        part = ordered[start : start + READ_BATCH]
        keys = [BatchEntry.generate_key(celery, name) for name in part]
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "definition", "meta")
                pipe.zscore(schedule_key, key)
            replies = pipe.execute()
        stored = {
            name: (definition, meta, score)
            for name, (definition, meta), score in zip(
                part, replies[0::2], replies[1::2], strict=True
            )
        }
        lost = [name for name in part if name in wanted and stored[name][1] is None]
        last_fires = _last_fires(core, lost)
        with client.pipeline(transaction=False) as pipe:
            for name in part:
                _follow_one(celery, pipe, name, wanted.get(name), stored[name], last_fires, counts)
            pipe.execute()
    return counts


def _follow_one(
    celery: Celery,
    pipe: Pipeline,
    name: str,
    row: Schedule | None,
    stored: tuple[str | None, str | None, float | None],
    last_fires: dict[str, datetime],
    counts: dict[str, int],
) -> None:
    """Queue on ``pipe`` what makes one entry follow its row (None: no enabled schedule)."""
    definition, meta, score = stored
    if row is None:
        if definition is not None or score is not None:
            delete_in(pipe, celery, name)
            counts["removed"] += 1
        return
    last_run_at = BatchEntry.decode_meta(meta).get("last_run_at")
    if last_run_at is None:
        # The meta is gone (a flush): take the newest fire SQL knows, so the entry neither
        # fires at once nor skips its next fire.
        counts["restored"] += 1
        last_run_at = last_fires.get(name) or row.updated_at
    try:
        entry = entry_for(celery, row, last_run_at)
    except UserError as exc:
        log.error("schedule %s not written to RedBeat: %s", name, exc)
        return
    if meta is None or score is None or definition != entry.definition_json():
        counts["rewritten"] += 1
        entry.save_in(pipe)


def _last_fires(core: Core, names: list[str]) -> dict[str, datetime]:
    """The newest fire time SQL holds for each named schedule that has one."""
    if not names:
        return {}
    with core.reading() as session:
        query = (
            select(Run.schedule_name, func.max(Run.scheduled_for))
            .where(Run.schedule_name.in_(names))
            .group_by(Run.schedule_name)
        )
        return {name: fired for name, fired in session.execute(query) if fired is not None}
