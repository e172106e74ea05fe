"""Catch-up: running the fires a schedule missed, after beat was down or while it was disabled.

- ``catch_up``: after a fire of a schedule whose ``catch_up`` is ``each`` (the worker that
  starts the fire calls it), the fires missed before it, within the schedule's window and
  count, are backfilled.
- ``resume_and_catch_up``: a disabled (or paused) schedule is enabled, and the fires since it
  was disabled are backfilled.

Both start a backfill (batch/backfills.py), ``--only missing``: the same bounds, durability and
one run per fire as any backfill. (``catch_up = skip`` is a skip check of ``start_run``.)
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy.orm import Session

from batch import runs, schedules
from batch.backfills import (
    MISSING,
    TICK,
    Request,
    fire_times,
    runs_by_fire,
    start_backfill,
)
from batch.core import Core
from batch.cron import IntervalSchedule, make_schedule
from batch.exceptions import Conflict, UserError
from batch.models import Backfill, Schedule
from batch.times import show_utc

log = logging.getLogger(__name__)

#: Who starts the backfill of a schedule whose ``catch_up`` is ``each``.
CATCH_UP_ACTOR = "catch-up"
#: Fires this soon after a schedule was saved or enabled are not missed: its first fire
#: comes at least an interval (1 s or more) after it.
SAVE_MARGIN = timedelta(seconds=1)


def resume_and_catch_up(core: Core, celery: Celery, name: str, *, actor: str) -> Backfill | None:
    """Enable a disabled (or paused) schedule and backfill the fires missed since it was
    disabled (``--only missing``); the backfill, or None when no fire was missed. Raises
    NotFound, and Conflict for a schedule that is enabled."""
    with core.reading() as session:
        row = schedules.get_schedule(session, name)
        if row.enabled:
            raise Conflict(f"schedule {name} is enabled: it missed nothing to catch up")
        since = row.disabled_at or row.updated_at
    enabled = schedules.set_enabled(core, celery, name, True, actor=actor)
    if enabled.updated_at <= since:
        return None
    request = Request(name, since, enabled.updated_at, only=MISSING)
    try:
        return start_backfill(core, celery, request, actor=actor)
    except Conflict as exc:
        raise Conflict(f"{name} is enabled again, but its catch-up did not start: {exc}") from None
    except UserError as exc:  # no fire while it was disabled
        log.info("%s resumed with nothing to catch up: %s", name, exc)
        return None


def catch_up(core: Core, celery: Celery, fire: runs.Fire) -> Backfill | None:
    """After a fire of a schedule whose ``catch_up`` is ``each``: when the fire before it has
    no run (beat was down), backfill the fires missed within the schedule's catch-up window
    (the newest ``catch_up_max``, since its last change), as actor ``catch-up``. Never raises:
    a catch-up that cannot start is logged."""
    try:
        with core.reading() as session:
            row = session.get(Schedule, fire.schedule)
            if row is None or row.catch_up != "each":
                return None
            missed = _missed_fires(session, row, fire.scheduled_for)
        if not missed:
            return None
        request = Request(fire.schedule, missed[0], fire.scheduled_for, only=MISSING)
        backfill = start_backfill(core, celery, request, actor=CATCH_UP_ACTOR)
        log.warning(
            "%s: catching up %s missed fires from %s (backfill %s)",
            fire.schedule, len(missed), show_utc(missed[0]), backfill.id,
        )  # fmt: skip
        return backfill
    except Exception as exc:  # noqa: BLE001 - the fire's own run goes on whatever
        log.warning("%s: no catch-up: %s", fire.schedule, runs.describe_error(exc))
        return None


def _missed_fires(session: Session, row: Schedule, fire: datetime) -> list[datetime]:
    """The fires before ``fire`` that a catch-up covers, if the one just before it has no
    run; else none."""
    timing = make_schedule(
        cron=row.cron, timezone=row.timezone, interval_seconds=row.interval_seconds
    )
    # An interval schedule's grid starts when its entry was written, just after the save:
    # that moment is no fire of its own.
    saved = row.updated_at + SAVE_MARGIN
    since = max(fire - timedelta(seconds=row.catch_up_window_seconds), saved)
    previous = timing.previous_before(fire)
    if previous < since or runs_by_fire(session, row.name, previous, previous + TICK):
        return []
    if isinstance(timing, IntervalSchedule):
        back = range(row.catch_up_max, 0, -1)
        return [fire - k * timing.every for k in back if fire - k * timing.every >= since]
    return list(fire_times(timing, since, fire))[-row.catch_up_max :]
