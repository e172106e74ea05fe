"""Alerts: what a person must see, raised once per cause and resolved by a success.

A cause is a key and the alert's primary key: whichever process sees a cause first inserts
the alert, and every later sighting (a second beat, another worker, a run finished twice)
inserts nothing. The causes:

- ``run_failed:<schedule>:<last success>``: the schedule's runs have failed
  ``alert_after_failures`` times in a row since its last successful run (``start`` if none);
  one streak is one cause, however long it grows;
- ``missed_deadline:<schedule>:<fire time>``: a fire whose run did not start, or did not
  succeed, within the schedule's deadline (batch/deadlines.py).

The next successful run of the schedule resolves its open alerts, in the transaction that
records the success. Raising and resolving each record an event, in the same transaction: the
outbox from which webhooks and e-mail are delivered (batch/alert_delivery.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from batch.db import insert_ignoring_duplicates, utcnow
from batch.models import FAILED, SUCCEEDED, Alert, AlertEvent, Run, Schedule

RUN_FAILED = "run_failed"
PAUSED = "paused"
RAISED, RESOLVED = "raised", "resolved"
#: A streak's cause when the schedule has never succeeded.
NO_SUCCESS = "start"
#: The longest error an alert's message quotes.
MESSAGE_ERROR_LENGTH = 500


def raise_alert(
    session: Session,
    cause: str,
    kind: str,
    message: str,
    *,
    schedule: str | None = None,
    run_id: str | None = None,
) -> bool:
    """Record the alert of ``cause`` unless it was raised already; whether this raised it."""
    values = {
        "id": cause,
        "kind": kind,
        "schedule_name": schedule,
        "run_id": run_id,
        "message": message,
        "raised_at": utcnow(),
    }
    raised = insert_ignoring_duplicates(session, Alert, values)
    if raised:
        _record_events(session, [cause], RAISED)
    return raised


def _record_events(session: Session, alert_ids: list[str], event: str) -> None:
    # The outbox of the deliveries: committed with the alert, so no event is ever lost.
    if alert_ids:
        rows = [{"alert_id": alert_id, "event": event, "at": utcnow()} for alert_id in alert_ids]
        session.execute(insert(AlertEvent), rows)


def run_finished(
    session: Session, run_id: str, schedule: str, status: str, error: str | None
) -> None:
    """In the transaction that finished a live run of ``schedule`` (not a backfill's: past
    fires, watched on the backfill's page): a failure that completes a streak of
    ``alert_after_failures`` raises an alert; a success resolves the schedule's open alerts."""
    if status == FAILED:
        _failure_streak(session, schedule, run_id, error)
    elif status == SUCCEEDED:
        resolve(session, Alert.schedule_name == schedule, by=run_id)


def resolve(session: Session, *conditions: Any, by: str | None = None) -> list[str]:
    """Resolve the open alerts that match ``conditions`` (``by``: the run whose success did);
    their ids. Each records a ``resolved`` event."""
    resolved = sorted(
        session.scalars(
            update(Alert)
            .where(Alert.resolved_at.is_(None), *conditions)
            .values(resolved_at=utcnow(), resolved_by=by)
            .returning(Alert.id)
        )
    )
    _record_events(session, resolved, RESOLVED)
    return resolved


def _failure_streak(session: Session, schedule: str, run_id: str, error: str | None) -> None:
    # The schedule's row is locked first: two runs failing at once on PostgreSQL each count
    # the other's failure, so the streak that reaches N is seen (SQLite has one writer).
    row = session.execute(
        select(Schedule.alert_after_failures, Schedule.pause_after_failures, Schedule.enabled)
        .where(Schedule.name == schedule)
        .with_for_update()
    ).one_or_none()
    alert_after = row.alert_after_failures if row else 1  # a schedule deleted since: 1
    pause_after = row.pause_after_failures if row and row.enabled else None
    last = session.scalars(
        select(Run.status)
        .where(
            Run.schedule_name == schedule,
            Run.status.in_((SUCCEEDED, FAILED)),
            Run.backfill_id.is_(None),
        )
        .order_by(Run.created_at.desc())
        .limit(max(alert_after, pause_after or 0))
    ).all()
    streak = next((i for i, status in enumerate(last) if status != FAILED), len(last))
    if streak < alert_after and (pause_after is None or streak < pause_after):
        return
    since = session.scalar(
        select(Run.id)
        .where(Run.schedule_name == schedule, Run.status == SUCCEEDED, Run.backfill_id.is_(None))
        .order_by(Run.created_at.desc())
        .limit(1)
    )
    reason = (error or "no error recorded")[:MESSAGE_ERROR_LENGTH]
    streak_key = f"{schedule}:{since or NO_SUCCESS}"
    if streak >= alert_after:
        n = alert_after
        what = f"a run of {schedule} failed" if n == 1 else f"{n} runs of {schedule} failed"
        raise_alert(
            session,
            f"{RUN_FAILED}:{streak_key}",
            RUN_FAILED,
            f"{what} in a row: {reason}" if n > 1 else f"{what}: {reason}",
            schedule=schedule,
            run_id=run_id,
        )
    if pause_after is not None and streak >= pause_after:
        from batch.schedules import pause_schedule  # schedules imports the engine's modules

        why = f"paused after {pause_after} failed runs in a row (the last: run {run_id})"
        if pause_schedule(session, schedule, why):
            raise_alert(
                session,
                f"{PAUSED}:{streak_key}",
                PAUSED,
                f"{schedule} {why}; enable it to resume: {reason}",
                schedule=schedule,
                run_id=run_id,
            )


def open_alerts(session: Session, limit: int) -> list[Alert]:
    """The newest ``limit`` alerts not resolved yet (``ix_alerts_open``)."""
    return list(
        session.scalars(
            select(Alert)
            .where(Alert.resolved_at.is_(None))
            .order_by(Alert.raised_at.desc())
            .limit(limit)
        )
    )


def schedule_alerts(session: Session, schedule: str, limit: int) -> list[Alert]:
    """A schedule's newest ``limit`` alerts, open or resolved (``ix_alerts_schedule``)."""
    return list(
        session.scalars(
            select(Alert)
            .where(Alert.schedule_name == schedule)
            .order_by(Alert.raised_at.desc())
            .limit(limit)
        )
    )
