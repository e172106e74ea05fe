"""Alerts: what a person must see, raised once per cause and resolved by a success.

A cause is a key (``run_failed:<run id>``) and the alert's primary key: whichever process sees a
cause first inserts the alert, and every later sighting (a second beat, another worker, a run
finished twice) inserts nothing. The next successful run of the schedule resolves its open
alerts, in the transaction that records the success.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from batch.db import insert_ignoring_duplicates, utcnow
from batch.models import FAILED, SUCCEEDED, Alert, Run

RUN_FAILED = "run_failed"
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
    return insert_ignoring_duplicates(session, Alert, values)


def run_finished(session: Session, run_id: str, status: str, error: str | None) -> None:
    """A run of a schedule that failed raises an alert; one that succeeded resolves the
    schedule's open alerts. Runs of no schedule raise nothing."""
    schedule = session.scalar(select(Run.schedule_name).where(Run.id == run_id))
    if schedule is None:
        return
    if status == FAILED:
        reason = (error or "no error recorded")[:MESSAGE_ERROR_LENGTH]
        raise_alert(
            session,
            f"{RUN_FAILED}:{run_id}",
            RUN_FAILED,
            f"a run of {schedule} failed: {reason}",
            schedule=schedule,
            run_id=run_id,
        )
    elif status == SUCCEEDED:
        session.execute(
            update(Alert)
            .where(Alert.schedule_name == schedule, Alert.resolved_at.is_(None))
            .values(resolved_at=utcnow(), resolved_by=run_id)
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
