"""Backfill: runs for the past fires of a schedule, made a few at a time.

A backfill covers the fires of one schedule from ``since`` (included) to ``until`` (excluded),
both in the past. Each fire chosen gets one run with that fire's time-relative params (they
are resolved as beat's fire would have resolved them), so the sales summary of a fire sums that
fire's hour. Which fires are chosen (``only``):

- ``missing``: fires with no run, or whose run was skipped or cancelled (no result);
- ``failed``: fires whose run failed;
- ``all``: every fire, except one whose run is still queued or running.

Runs are unique per (schedule, fire time): a fire with no run gets the id beat's fire would
have had, and a backfill run twice finds its runs and makes nothing new. A fire run again
replaces its earlier run, in one transaction: the old row and its chunks are deleted and the
new run has an id of its own, so a late message of the old run finds nothing to run.

A backfill keeps at most ``max_running`` of its runs queued or running; its messages are sent
with the least priority, so the scheduler's live fires go first. Its driver
(batch/run_driver.py) runs on the worker nodes, one node at a time, and tops each
backfill up (``advance``); the command, the page or the API call that starts a backfill
sends its first runs. Runs of a backfill count in no failure streak, overlap or deadline: they are
not the schedule's live fires.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from celery import Celery
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from batch import runs
from batch.celery_app import message_priority
from batch.constants import TASK_START_RUN
from batch.core import Core
from batch.cron import FireTimes, IntervalSchedule, make_schedule
from batch.db import insert_ignoring_duplicates, utcnow
from batch.exceptions import Conflict, NotFound, UserError
from batch.models import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    AuditEntry,
    Backfill,
    Run,
    Schedule,
)
from batch.run_filters import parse_moment
from batch.schedules import get_schedule
from batch.times import show_utc

log = logging.getLogger(__name__)

MISSING, ONLY_FAILED, ALL = "missing", "failed", "all"
ONLY_CHOICES = (MISSING, ONLY_FAILED, ALL)
#: A backfill's states (``Backfill.state``).
GOING, DONE, STOPPED = "running", "done", "cancelled"
DEFAULT_MAX_RUNNING = 2
MAX_RUNNING_LIMIT = 100
#: Most fires one backfill covers (a year of a schedule every 5 minutes).
MAX_FIRES = 105_120
#: Fires looked at per step of the driver, at most.
SCAN_BATCH = 1_000
#: Fires a dry run lists (the rest are counted).
LISTED_FIRES = 20
#: The audit log's action when a backfill is started or cancelled (object type "schedule").
AUDIT_START, AUDIT_CANCEL = "backfill", "cancel backfill"
#: The runs of an ended fire that each choice runs again.
_RUN_AGAIN = {
    MISSING: (SKIPPED, CANCELLED),
    ONLY_FAILED: (FAILED,),
    ALL: (SKIPPED, CANCELLED, FAILED, SUCCEEDED),
}


@dataclass(frozen=True)
class Request:
    """What a backfill is asked to do (``check_request`` says what is wrong with it)."""

    schedule: str
    since: datetime
    until: datetime
    only: str = MISSING
    max_running: int = DEFAULT_MAX_RUNNING


@dataclass(frozen=True)
class PlannedFire:
    """One fire of a dry run: what the backfill would do with it, and with which params."""

    fire: datetime
    action: str  # "new" or "again" (replacing run ``replaces``)
    params: dict[str, Any]
    replaces: str | None = None


@dataclass
class Plan:
    """A dry run: how many fires the range holds and what would become of them."""

    request: Request
    fires: int = 0
    new: int = 0
    again: int = 0
    left: int = 0
    listed: list[PlannedFire] = field(default_factory=list)

    @property
    def runs(self) -> int:
        """The runs the backfill would make."""
        return self.new + self.again


def parse_request(schedule: str, raw: Mapping[str, Any]) -> Request:
    """A request from the API's JSON or the page's form: ``from`` and ``to`` (texts as
    ``parse_moment`` reads them), ``only`` and ``max_running`` (optional); UserError saying
    which field is wrong."""
    moments = []
    for name in ("from", "to"):
        text = raw.get(name)
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{name} is required: a date (2025-01-01) or an ISO time")
        moments.append(parse_moment(name, text.strip(), end_of_day=False))
    # Not given, or left blank in the form: the defaults (0, false and [] are refused below).
    only = raw.get("only")
    only = MISSING if only is None or only == "" else only
    max_running = raw.get("max_running")
    max_running = DEFAULT_MAX_RUNNING if max_running is None or max_running == "" else max_running
    if isinstance(max_running, str) and max_running.strip().isdigit():
        max_running = int(max_running)
    if not isinstance(max_running, int) or isinstance(max_running, bool):
        raise UserError(f"bad max running {max_running!r}: 1 to {MAX_RUNNING_LIMIT}")
    if not isinstance(only, str):
        raise UserError(f"bad only {only!r}: expected one of {', '.join(ONLY_CHOICES)}")
    since, until = moments
    assert since is not None and until is not None
    return Request(schedule, since, until, only=only, max_running=max_running)


def check_request(
    core: Core, session: Session, request: Request, now: datetime
) -> tuple[Schedule, FireTimes]:
    """The schedule and its timing, or the UserError that says what is wrong."""
    schedule = get_schedule(session, request.schedule)
    core.jobs.get(schedule.job)  # UnknownJob: no worker could run it
    if request.only not in ONLY_CHOICES:
        raise UserError(f"bad only {request.only!r}: expected one of {', '.join(ONLY_CHOICES)}")
    if not 1 <= request.max_running <= MAX_RUNNING_LIMIT:
        raise UserError(f"bad max running {request.max_running}: 1 to {MAX_RUNNING_LIMIT}")
    if request.since >= request.until:
        raise UserError(
            f"the range is empty: from {show_utc(request.since)} is not before"
            f" to {show_utc(request.until)}"
        )
    if request.until > now:
        raise UserError(
            f"to {show_utc(request.until)} is in the future: a backfill covers past fires"
            " (beat fires the others)"
        )
    timing = make_schedule(
        cron=schedule.cron, timezone=schedule.timezone, interval_seconds=schedule.interval_seconds
    )
    return schedule, timing


def fire_times(timing: FireTimes, since: datetime, until: datetime) -> Iterator[datetime]:
    """The fire times from ``since`` (included) to ``until`` (excluded). An interval
    schedule's fires are counted from ``since``."""
    fire = since if isinstance(timing, IntervalSchedule) else _first_at_or_after(timing, since)
    while fire < until:
        yield fire
        fire = timing.next_after(fire)


def _first_at_or_after(timing: FireTimes, moment: datetime) -> datetime:
    return timing.next_after(moment - timedelta(microseconds=1))


def count_fires(timing: FireTimes, since: datetime, until: datetime) -> int:
    """How many fires the range holds; UserError past MAX_FIRES."""
    count = 0
    for count, _ in enumerate(fire_times(timing, since, until), start=1):
        if count > MAX_FIRES:
            raise UserError(f"the range holds more than {MAX_FIRES:,} fires: backfill it in parts")
    if count == 0:
        raise UserError(f"no fire of the schedule from {show_utc(since)} to {show_utc(until)}")
    return count


def plan_backfill(core: Core, request: Request) -> Plan:
    """What ``start_backfill`` would do: a dry run, which writes nothing."""
    now = utcnow()
    with core.reading() as session:
        schedule, timing = check_request(core, session, request, now)
        plan = Plan(request, fires=count_fires(timing, request.since, request.until))
        existing_runs = runs_by_fire(session, schedule.name, request.since, request.until)
        job = core.jobs.get(schedule.job)
        for fire in fire_times(timing, request.since, request.until):
            existing = existing_runs.get(fire)
            action = _action(existing, request.only)
            if action is None:
                plan.left += 1
                continue
            if action == "new":
                plan.new += 1
            else:
                plan.again += 1
            if len(plan.listed) < LISTED_FIRES:
                params = _fire_params(job, schedule, fire)
                replaces = existing[0] if existing else None
                plan.listed.append(PlannedFire(fire, action, params, replaces))
    return plan


def start_backfill(core: Core, celery: Celery, request: Request, *, actor: str) -> Backfill:
    """Record a backfill (audited) and send its first runs; returns it.

    Raises NotFound for an unknown schedule, UserError for a bad range or choice, and
    Conflict while another backfill of the schedule is running. Nothing is written then.
    """
    now = utcnow()
    with core.transaction() as session:
        schedule, timing = check_request(core, session, request, now)
        fires = count_fires(timing, request.since, request.until)
        going = session.scalar(
            select(Backfill.id).where(
                Backfill.schedule_name == schedule.name, Backfill.state == GOING
            )
        )
        if going is not None:
            raise Conflict(
                f"backfill {going} of {schedule.name} is still running: wait for it or cancel it"
            )
        backfill = Backfill(
            schedule_name=schedule.name,
            since=request.since,
            until=request.until,
            only=request.only,
            max_running=request.max_running,
            state=GOING,
            actor=actor,
            created_at=now,
            fires=fires,
            fires_done=0,
            runs_made=0,
            next_fire=next(fire_times(timing, request.since, request.until)),
        )
        session.add(backfill)
        session.flush()
        session.add(
            AuditEntry(
                at=now, actor=actor, action=AUDIT_START, object_type="schedule",
                object_name=schedule.name, before=None, after=describe(backfill),
            )
        )  # fmt: skip
        backfill_id = backfill.id
    log.info("backfill %s of %s by %s: %s fires", backfill_id, request.schedule, actor, fires)
    advance(core, celery, backfill_id)
    return get_backfill(core, backfill_id)


def cancel_backfill(core: Core, backfill_id: int, *, actor: str) -> Backfill:
    """Stop a running backfill from making runs (those made go on); returns it.

    Raises NotFound, and Conflict for one that already ended.
    """
    now = utcnow()
    with core.transaction() as session:
        backfill = session.get(Backfill, backfill_id, with_for_update=True)
        if backfill is None:
            raise NotFound(f"no backfill {backfill_id}")
        if backfill.state != GOING:
            raise Conflict(f"backfill {backfill_id} is {backfill.state}: it makes no more runs")
        backfill.state, backfill.finished_at = STOPPED, now
        session.add(
            AuditEntry(
                at=now, actor=actor, action=AUDIT_CANCEL, object_type="schedule",
                object_name=backfill.schedule_name, before=None, after=describe(backfill),
            )
        )  # fmt: skip
    log.info("backfill %s cancelled by %s", backfill_id, actor)
    return get_backfill(core, backfill_id)


def get_backfill(core: Core, backfill_id: int) -> Backfill:
    """The backfill ``backfill_id``, or NotFound."""
    with core.reading() as session:
        backfill = session.get(Backfill, backfill_id)
        if backfill is None:
            raise NotFound(f"no backfill {backfill_id}")
        session.expunge(backfill)
    return backfill


def newest_backfills(session: Session, *, schedule: str | None, limit: int) -> list[Backfill]:
    """The newest ``limit`` backfills (of ``schedule`` only, when given)."""
    query = select(Backfill).order_by(Backfill.id.desc()).limit(limit)
    if schedule is not None:
        query = query.where(Backfill.schedule_name == schedule)
    return list(session.scalars(query))


def progress(core: Core, backfill_id: int) -> dict[str, Any]:
    """A backfill with its runs by status (``describe`` and ``runs``), or NotFound."""
    with core.reading() as session:
        backfill = session.get(Backfill, backfill_id)
        if backfill is None:
            raise NotFound(f"no backfill {backfill_id}")
        return progress_of(session, backfill)


def progress_of(session: Session, backfill: Backfill) -> dict[str, Any]:
    """``backfill`` as ``describe`` shows it, with ``runs``: its runs by status."""
    return {**describe(backfill), "runs": runs_by_status(session, backfill.id)}


def plan_as_dict(plan: Plan) -> dict[str, Any]:
    """A dry run as the API and ``--json`` show it."""
    request = plan.request
    return {
        "schedule": request.schedule,
        "from": request.since.isoformat(),
        "to": request.until.isoformat(),
        "only": request.only,
        "fires": plan.fires,
        "runs": plan.runs,
        "new": plan.new,
        "again": plan.again,
        "left": plan.left,
        "first_runs": [
            {"fire": fire.fire.isoformat(), "action": fire.action, "params": fire.params,
             "replaces": fire.replaces}
            for fire in plan.listed
        ],
    }  # fmt: skip


def runs_by_status(session: Session, backfill_id: int) -> dict[str, int]:
    """How many of a backfill's runs are in each status (``ix_runs_backfill_status``)."""
    rows = session.execute(
        select(Run.status, func.count()).where(Run.backfill_id == backfill_id).group_by(Run.status)
    )
    return {status: count for status, count in rows}


def describe(backfill: Backfill) -> dict[str, Any]:
    """A backfill as the API, the audit log and ``--json`` show it."""
    return {
        "id": backfill.id,
        "schedule": backfill.schedule_name,
        "from": backfill.since.isoformat(),
        "to": backfill.until.isoformat(),
        "only": backfill.only,
        "max_running": backfill.max_running,
        "state": backfill.state,
        "actor": backfill.actor,
        "created_at": backfill.created_at.isoformat(),
        "finished_at": backfill.finished_at.isoformat() if backfill.finished_at else None,
        "fires": backfill.fires,
        "fires_done": backfill.fires_done,
        "runs_made": backfill.runs_made,
    }


def advance(core: Core, celery: Celery, backfill_id: int) -> int:
    """Make and send runs of a running backfill until ``max_running`` are going or its fires
    are done (and mark it done once its last run ended); how many runs it sent."""
    sent = 0
    if not _needs_step(core, backfill_id):
        return 0
    while True:
        made, more = _step(core, backfill_id)
        _send(core, celery, made)
        sent += len(made)
        if not more:
            return sent


def _needs_step(core: Core, backfill_id: int) -> bool:
    """Whether a step would do anything: make runs (room, and fires left) or mark the
    backfill done. Read without a write lock, so a driver looking often costs little."""
    with core.reading() as session:
        backfill = session.get(Backfill, backfill_id)
        if backfill is None or backfill.state != GOING:
            return False
        going = _going(session, backfill_id)
        if backfill.next_fire is None:
            return not going
        return going < backfill.max_running


def _going(session: Session, backfill_id: int) -> int:
    """How many of the backfill's runs are queued or running (``ix_runs_backfill_status``)."""
    going = session.scalar(
        select(func.count())
        .select_from(Run)
        .where(Run.backfill_id == backfill_id, Run.status.in_((QUEUED, RUNNING)))
    )
    return going or 0


@dataclass(frozen=True)
class _MadeRun:
    run_id: str
    job: str
    params: dict[str, Any]
    trigger: str
    queue: str


def _step(core: Core, backfill_id: int) -> tuple[list[_MadeRun], bool]:
    """One transaction: the runs made (to send once committed), and whether to step again
    at once (room is left and fires remain)."""
    now = utcnow()
    with core.transaction() as session:
        backfill = session.get(Backfill, backfill_id, with_for_update=True)
        if backfill is None or backfill.state != GOING:
            return [], False
        going = _going(session, backfill_id)
        room = backfill.max_running - going
        if backfill.next_fire is None:
            if not going:
                backfill.state, backfill.finished_at = DONE, now
                log.info("backfill %s of %s done", backfill_id, backfill.schedule_name)
            return [], False
        if room <= 0:
            return [], False
        schedule = session.get(Schedule, backfill.schedule_name)
        if schedule is None:
            backfill.state, backfill.finished_at = STOPPED, now
            log.warning("backfill %s stopped: its schedule is gone", backfill_id)
            return [], False
        try:
            timing = make_schedule(
                cron=schedule.cron,
                timezone=schedule.timezone,
                interval_seconds=schedule.interval_seconds,
            )
            # Before anything is written: the job may be gone, or its params no longer valid.
            _fire_params(core.jobs.get(schedule.job), schedule, backfill.next_fire)
        except (UserError, ValueError) as exc:
            backfill.state, backfill.finished_at = STOPPED, now
            log.warning("backfill %s of %s stopped: %s", backfill_id, schedule.name, exc)
            return [], False
        made = _make_runs(core, session, backfill, schedule, timing, room, now)
        return made, backfill.next_fire is not None and len(made) < room


def _make_runs(
    core: Core,
    session: Session,
    backfill: Backfill,
    schedule: Schedule,
    timing: FireTimes,
    room: int,
    now: datetime,
) -> list[_MadeRun]:
    """Look at the backfill's next fires (SCAN_BATCH at most), making up to ``room`` runs."""
    assert backfill.next_fire is not None
    fires = list(islice(fire_times(timing, backfill.next_fire, backfill.until), SCAN_BATCH))
    if not fires:  # the schedule's timing changed: no fire is left in the range
        backfill.next_fire = None
        return []
    existing_runs = runs_by_fire(session, schedule.name, fires[0], fires[-1] + TICK)
    job = core.jobs.get(schedule.job)
    trigger = f"backfill:{backfill.id} by {backfill.actor}"[: Run.trigger.type.length]
    queue = schedule.queue or job.queue
    made: list[_MadeRun] = []
    looked = 0
    for fire in fires:
        if len(made) == room:
            break
        looked += 1
        existing = existing_runs.get(fire)
        action = _action(existing, backfill.only)
        if action is None:
            continue
        params = _fire_params(job, schedule, fire)
        if existing is not None:
            # The earlier run goes, its chunks with it; the new one has an id of its own.
            old_id, old_status = existing
            gone = session.execute(delete(Run).where(Run.id == old_id, Run.status == old_status))
            if gone.rowcount != 1:  # type: ignore[attr-defined]
                continue  # it moved on meanwhile: looked at again by no one, left as it is
            run_id = _again_run_id(schedule.name, fire, backfill.id)
        else:
            run_id = runs.scheduled_run_id(schedule.name, fire)
        values = {
            "id": run_id, "job": job.name, "params": params, "status": QUEUED,
            "trigger": trigger, "schedule_name": schedule.name, "scheduled_for": fire,
            "queue": queue, "created_at": now, "sent_at": now, "backfill_id": backfill.id,
        }  # fmt: skip
        if insert_ignoring_duplicates(session, Run, values):
            made.append(_MadeRun(run_id, job.name, params, trigger, queue))
    backfill.fires_done += looked
    backfill.runs_made += len(made)
    if looked < len(fires):
        backfill.next_fire = fires[looked]
    else:
        after = timing.next_after(fires[-1])
        backfill.next_fire = after if after < backfill.until else None
    return made


#: The smallest step of time a fire time has (SQL keeps microseconds).
TICK = timedelta(microseconds=1)


def _again_run_id(schedule: str, fire: datetime, backfill_id: int) -> str:
    return str(uuid.uuid5(runs.RUN_ID_NAMESPACE, f"{schedule}@{fire.isoformat()}#{backfill_id}"))


def runs_by_fire(
    session: Session, schedule: str, since: datetime, until: datetime
) -> dict[datetime, tuple[str, str]]:
    """The runs of ``schedule``'s fires from ``since`` to ``until`` (excluded): fire time ->
    (run id, status), on ``uq_runs_schedule_fire``."""
    rows = session.execute(
        select(Run.scheduled_for, Run.id, Run.status).where(
            Run.schedule_name == schedule,
            Run.scheduled_for >= since,
            Run.scheduled_for < until,
        )
    )
    return {fire: (run_id, status) for fire, run_id, status in rows}


def _action(existing: tuple[str, str] | None, only: str) -> str | None:
    """ "new", "again" or None (left as it is) for a fire with that run (or none)."""
    if existing is None:
        return None if only == ONLY_FAILED else "new"
    return "again" if existing[1] in _RUN_AGAIN[only] else None


def _fire_params(job: Any, schedule: Schedule, fire: datetime) -> dict[str, Any]:
    """The schedule's params as its fire at ``fire`` resolves them."""
    return job.validate_params(schedule.params or {}, now=fire).model_dump(mode="json")


def _send(core: Core, celery: Celery, made: list[_MadeRun]) -> None:
    """Send the start of each run made; one the broker did not take stays queued, and the
    recovery sweep sends it again."""
    if not made:
        return
    now = utcnow()
    priority = message_priority(celery, 0)
    try:
        for run in made:
            celery.send_task(
                TASK_START_RUN,
                kwargs={
                    "job": run.job, "params": run.params, "run_id": run.run_id,
                    "trigger": run.trigger,
                },
                queue=run.queue,
                ignore_result=True,
                priority=priority,
                **runs.sent_at_header(now),
            )  # fmt: skip
    except Exception as exc:
        log.warning("backfill runs left for the recovery sweep to send: %s", exc)
