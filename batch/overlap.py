"""The overlap policies that hold a fire back: ``buffer_one`` (one fire waits for the run
going, and starts when it ends) and ``cancel_other`` (the run going is cancelled for the new
fire). ``skip`` is judged with the other skip reasons in batch/runs.py."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from batch.models import QUEUED, RUNNING, SKIPPED, WAITING, Run, Schedule
from batch.run_ends import cancel, finish, live_runs

if TYPE_CHECKING:
    from batch.runs import Fire  # runs imports this module

log = logging.getLogger(__name__)

#: Overlap policies that act (``allow`` does nothing): what a fire does while a run of its
#: schedule is going.
SKIP, BUFFER_ONE, CANCEL_OTHER = "skip", "buffer_one", "cancel_other"


def holds_back(session: Session, run_id: str, fire: Fire, now: datetime) -> bool:
    """``buffer_one`` and ``cancel_other``, for a fire whose run was just claimed: whether it
    is not to start now (it waits for the run going, or was skipped)."""
    # The schedule's row first: two fires at once on PostgreSQL see each other's choice.
    session.execute(select(Schedule.name).where(Schedule.name == fire.schedule).with_for_update())
    going = session.scalars(live_runs(fire.schedule, (QUEUED, RUNNING), but=run_id)).all()
    if fire.overlap == CANCEL_OTHER:
        waiting = session.scalars(live_runs(fire.schedule, (WAITING,), but=run_id)).all()
        replaced = f"cancelled: replaced by run {run_id}, the fire at {fire.scheduled_for}"
        for cancelled in cancel(session, [*going, *waiting], f"{replaced} (cancel_other)", now):
            log.info("run %s cancelled: the fire of run %s replaces it", cancelled, run_id)
        return False
    if not going:
        return False
    waiting_id = session.scalar(live_runs(fire.schedule, (WAITING,), but=run_id).limit(1))
    if waiting_id is not None:
        why = f"skipped: run {waiting_id} already waits for run {going[0]} (buffer_one)"
        finish(session, run_id, SKIPPED, error=why, reason="overlap")
        return True
    session.execute(update(Run).where(Run.id == run_id).values(status=WAITING, started_at=None))
    log.info("run %s waits for run %s of %s to end (buffer_one)", run_id, going[0], fire.schedule)
    return True
