"""Deadlines: a fire whose run did not start, or did not succeed, in time raises an alert.

A schedule may promise that each fire's run starts within ``must_start_within_seconds`` and
succeeds within ``must_succeed_within_seconds`` of its fire time. The checks work from the
fire times the schedule's timing gives, not from what beat did: a fire beat never sent (beat
down, Redis gone) has no run, and that is a miss like a run left queued or started late.

Once a deadline (and ``GRACE``, for a finish committing at that moment) has passed, its fire
is judged once, from SQL: a cron fire's run is found by its fire time, an
interval schedule's fires are counted on from its newest run. Fires before the schedule's
last change (``updated_at``: created, edited, enabled) are not judged. A run that failed is
left to the failure alert; a skipped fire (overlap, late) missed its start.

One fire is one cause (``missed_deadline:<schedule>:<fire time>``), whichever deadline it
missed first; while a schedule has an open deadline alert, later misses add none (its next
success resolves it). The recovery sweep checks every pass, under its lock
(batch/sweep.py); a ``DeadlineWatch`` remembers when each schedule is next due for a check,
so a pass reads every watched schedule's timing but judges only the fires just due.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from batch import alerts
from batch.core import Core
from batch.cron import CronSchedule, FireTimes, make_schedule
from batch.exceptions import InvalidSchedule
from batch.models import FAILED, SKIPPED, SUCCEEDED, Alert, Run, Schedule
from batch.times import show_utc

log = logging.getLogger(__name__)

#: Waited past a deadline before judging it: a finish that commits at that moment counts.
GRACE = timedelta(seconds=2)
MISSED_START = "missed_start"
MISSED_SUCCESS = "missed_success"
KINDS = (MISSED_START, MISSED_SUCCESS)
CAUSE = "missed_deadline"
#: Alerts a log line names before "and N more".
LOGGED_ALERTS = 20


#: The schedules with an open deadline alert (``ix_alerts_open``).
_OPEN_DEADLINE_ALERTS = select(Alert.schedule_name).where(
    Alert.resolved_at.is_(None), Alert.kind.in_(KINDS)
)


class Watched(NamedTuple):
    """A schedule with a deadline, as a check reads it."""

    name: str
    cron: str | None
    timezone: str
    interval_seconds: int | None
    must_start_within_seconds: int | None
    must_succeed_within_seconds: int | None
    updated_at: datetime

    def deadlines(self) -> list[tuple[str, timedelta]]:
        """(kind, how long after a fire) for each deadline set."""
        given = (
            (MISSED_START, self.must_start_within_seconds),
            (MISSED_SUCCESS, self.must_succeed_within_seconds),
        )
        return [(kind, timedelta(seconds=seconds)) for kind, seconds in given if seconds]


class Miss(NamedTuple):
    """A fire that missed a deadline, and why."""

    schedule: str
    kind: str
    fire: datetime
    run_id: str | None
    why: str


@dataclass
class DeadlineWatch:
    """Judges fires as their deadlines pass; one per sweeping process."""

    #: Schedule name -> (its updated_at, when it is next due for a check).
    _next: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)

    def check(self, core: Core, now: datetime) -> list[str]:
        """Judge the fires whose deadlines passed since the last check; the alerts raised."""
        with core.reading() as session:
            watched = [Watched(*row) for row in session.execute(WATCHED)]
            self._forget_all_but({row.name for row in watched})
            misses: list[Miss] = []
            for row in watched:
                known = self._next.get(row.name)
                if known is not None and known[0] == row.updated_at and now < known[1]:
                    continue
                found, next_check = _judge(session, row, now)
                misses.extend(found)
                self._next[row.name] = (row.updated_at, next_check)
        if not misses:
            return []
        raised = []
        with core.transaction() as session:
            alerting = set(session.scalars(_OPEN_DEADLINE_ALERTS))
            for miss in misses:
                if miss.schedule in alerting:
                    continue  # one open deadline alert per schedule: its next success resolves it
                if _raise(session, miss):
                    raised.append(_cause(miss.schedule, miss.fire))
                alerting.add(miss.schedule)
        if raised:
            shown = ", ".join(raised[:LOGGED_ALERTS])
            more = f" and {len(raised) - LOGGED_ALERTS} more" if len(raised) > LOGGED_ALERTS else ""
            log.warning("%s deadline alert(s) raised: %s%s", len(raised), shown, more)
        return raised

    def _forget_all_but(self, names: set[str]) -> None:
        for name in [name for name in self._next if name not in names]:
            del self._next[name]


#: The timing of every enabled schedule with a deadline: what each check reads first.
WATCHED = select(
    Schedule.name,
    Schedule.cron,
    Schedule.timezone,
    Schedule.interval_seconds,
    Schedule.must_start_within_seconds,
    Schedule.must_succeed_within_seconds,
    Schedule.updated_at,
).where(
    Schedule.enabled,
    or_(
        Schedule.must_start_within_seconds.is_not(None),
        Schedule.must_succeed_within_seconds.is_not(None),
    ),
)


def _judge(session: Session, row: Watched, now: datetime) -> tuple[list[Miss], datetime]:
    """The misses among ``row``'s fires whose deadlines are due, and when to look next."""
    try:
        timing = make_schedule(
            cron=row.cron, timezone=row.timezone, interval_seconds=row.interval_seconds
        )
    except InvalidSchedule:
        return [], now + timedelta(days=1)  # beat does not fire it either
    fires = _Fires(session, row, timing)
    misses, next_check = [], None
    for kind, within in row.deadlines():
        fire = fires.latest_at_or_before(now - within - GRACE)
        if fire is not None:
            why = _why_missed(kind, fires.run_of(fire), fire + within)
            if why is not None:
                misses.append(Miss(row.name, kind, fire, fires.run_id(fire), why))
        following = fires.following(fire) + within + GRACE
        next_check = following if next_check is None else min(next_check, following)
    assert next_check is not None, "a watched schedule has a deadline"
    return misses, next_check


class _Fires:
    """A watched schedule's fire times since its last change, and their runs."""

    def __init__(self, session: Session, row: Watched, timing: FireTimes) -> None:
        self.session, self.row, self.timing = session, row, timing
        self.since = row.updated_at
        self._runs: dict[datetime, Run | None] = {}
        if isinstance(timing, CronSchedule):
            self.every: timedelta | None = None
            return
        # An interval schedule fires when saved, then every interval after its newest fire.
        self.every = timedelta(seconds=row.interval_seconds or 0)
        newest = session.scalars(
            select(Run)
            .where(
                Run.schedule_name == row.name,
                Run.scheduled_for.is_not(None),
                Run.backfill_id.is_(None),
            )
            .order_by(Run.created_at.desc())
            .limit(1)
        ).first()
        if newest is not None and newest.scheduled_for is not None:
            if newest.scheduled_for >= self.since:
                self.since = newest.scheduled_for
                self._runs[newest.scheduled_for] = newest

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The newest fire time at or before ``moment``, after the schedule's last change."""
        if self.every is None:
            fire = self.timing.latest_due(None, moment)
            return fire if fire > self.since else None
        if moment < self.since:
            return None
        return self.since + (moment - self.since) // self.every * self.every

    def following(self, fire: datetime | None) -> datetime:
        """The fire time after ``fire`` (after the last change when None)."""
        if self.every is None:
            return self.timing.next_after(fire or self.since)
        return self.since if fire is None else fire + self.every

    def run_id(self, fire: datetime) -> str | None:
        run = self.run_of(fire)
        return run.id if run is not None else None

    def run_of(self, fire: datetime) -> Run | None:
        if fire not in self._runs:
            if self.every is None:
                # By its fire (``uq_runs_schedule_fire``): a backfill may have run it again.
                self._runs[fire] = self.session.scalars(
                    select(Run).where(Run.schedule_name == self.row.name, Run.scheduled_for == fire)
                ).first()
            else:
                self._runs[fire] = None  # a later fire than the newest run: none was made
        return self._runs[fire]


def _why_missed(kind: str, run: Run | None, deadline: datetime) -> str | None:
    """Why the fire's run missed the deadline of ``kind``, or None if it did not."""
    if run is None:
        return "no run was recorded for it (beat did not fire it, or no worker took it)"
    if run.status == SKIPPED:
        return f"its run was {run.error or 'skipped'}"
    if kind == MISSED_START:
        if run.started_at is None:
            return f"its run was still {run.status} at the deadline"
        if run.started_at > deadline:
            return f"its run started only at {show_utc(run.started_at)}"
        return None
    if run.status == FAILED:
        return None  # the failure alert tells of it
    if run.status != SUCCEEDED or run.finished_at is None:
        return f"its run was still {run.status} at the deadline"
    if run.finished_at > deadline:
        return f"its run succeeded only at {show_utc(run.finished_at)}"
    return None


def _cause(schedule: str, fire: datetime) -> str:
    return f"{CAUSE}:{schedule}:{fire.isoformat()}"


def _raise(session: Session, miss: Miss) -> bool:
    verb = "start" if miss.kind == MISSED_START else "succeed"
    fire = f"the fire of {miss.schedule} at {show_utc(miss.fire)}"
    message = f"{fire} did not {verb} in time: {miss.why}"
    return alerts.raise_alert(
        session,
        _cause(miss.schedule, miss.fire),
        miss.kind,
        message,
        schedule=miss.schedule,
        run_id=miss.run_id,
    )
