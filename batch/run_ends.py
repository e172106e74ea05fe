"""How a run ends, in the transaction that ends it: its status and result, its count for
/metrics (batch/run_stats.py), its schedule's failure streak (batch/alerts.py), and the
release of the fire that waited for it (``overlap = "buffer_one"``)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from batch import alerts, run_stats
from batch.db import utcnow
from batch.models import (
    CANCELLED,
    FAILED,
    GOING_STATES,
    PENDING,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    WAITING,
    Run,
    RunChunk,
)


def finish(
    session: Session,
    run_id: str,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    reason: str | None = None,
) -> None:
    """End a queued or running run with ``status`` (a skip with its ``reason``), and count it."""
    now = utcnow()
    finished = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_((QUEUED, RUNNING)))
        .values(status=status, result=result, error=error, finished_at=now)
        .returning(Run.job, Run.schedule_name, Run.backfill_id, Run.started_at)
    ).one_or_none()
    if finished is not None:
        _count_finished(session, finished, status, reason, now)
    # A backfill's runs are not the schedule's live ones: no streak, no release.
    if finished is not None and finished.schedule_name and finished.backfill_id is None:
        alerts.run_finished(session, run_id, finished.schedule_name, status, error)
        release_waiting(session, finished.schedule_name)


def _count_finished(
    session: Session, finished: Any, status: str, reason: str | None, now: datetime
) -> None:
    started = finished.started_at
    run_stats.ended(
        session,
        run_stats.Key(finished.job, finished.schedule_name or ""),
        status,
        reason=(reason or "other") if status == SKIPPED else None,
        duration=(now - started).total_seconds()
        if status in (SUCCEEDED, FAILED) and started is not None
        else None,
        # A backfill's success is a past fire's: it does not say the schedule works now.
        succeeded_at=now if status == SUCCEEDED and finished.backfill_id is None else None,
    )


def cancel(session: Session, run_ids: list[str], error: str, now: datetime) -> list[str]:
    """Cancel those of ``run_ids`` still going, their chunks not started with them; a fire
    that waited for one of them is released. The ids cancelled."""
    cancelled = session.execute(
        update(Run)
        .where(Run.id.in_(run_ids), Run.status.in_(GOING_STATES))
        .values(status=CANCELLED, error=error, finished_at=now)
        .returning(Run.id, Run.job, Run.schedule_name, Run.backfill_id)
    ).all()
    ids = [row.id for row in cancelled]
    by_key = Counter(run_stats.Key(row.job, row.schedule_name or "") for row in cancelled)
    for key, runs in sorted(by_key.items()):
        run_stats.count(session, key, run_stats.RUNS, CANCELLED, runs)
    if ids:
        session.execute(
            update(RunChunk)
            .where(RunChunk.run_id.in_(ids), RunChunk.status == PENDING)
            .values(status=CANCELLED, finished_at=now)
        )
    for schedule in {row.schedule_name for row in cancelled if row.backfill_id is None}:
        release_waiting(session, schedule)
    return ids


def live_runs(schedule: str, states: tuple[str, ...], *, but: str | None = None) -> Any:
    """The ids of ``schedule``'s runs in ``states`` (other than ``but``): its live fires' and
    runs', not a backfill's."""
    query = select(Run.id).where(
        Run.schedule_name == schedule, Run.status.in_(states), Run.backfill_id.is_(None)
    )
    return query.where(Run.id != but) if but is not None else query


def release_waiting(session: Session, schedule: str) -> None:
    """In the transaction that ended a run of ``schedule``: its waiting fire, if nothing else
    of the schedule is going, is queued with no start sent; the run driver sends it."""
    others = live_runs(schedule, (QUEUED, RUNNING)).exists()
    session.execute(
        update(Run)
        .where(Run.schedule_name == schedule, Run.status == WAITING, Run.backfill_id.is_(None))
        .where(~others)
        .values(status=QUEUED, sent_at=None)
        .execution_options(synchronize_session=False)
    )
