"""``cleanups.purge_runs``: delete finished runs older than N days, with their chunks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from batch.constants import QUEUE_CLEANUPS
from batch.db import utcnow
from batch.jobs import Job, Params, Partial, Spec
from batch.jobs.views import Measure, ResultView
from batch.models import FINISHED_STATES, Run, RunChunk

#: Runs deleted per statement: keeps each write transaction short.
DELETE_BATCH = 500
#: About a hundred years: a cutoff further back overflows Python's dates near the year 1.
MAX_OLDER_THAN_DAYS = 36_500


class PurgeRunsParams(Params):
    older_than_days: int = Field(default=30, ge=1, le=MAX_OLDER_THAN_DAYS)


class PurgeRuns(Job):
    name = "cleanups.purge_runs"
    description = "Delete finished runs older than N days, with their chunks and results."
    queue = QUEUE_CLEANUPS
    params_model = PurgeRunsParams
    writes = True
    result_view = ResultView(measures=(Measure("deleted_runs", "Runs deleted", "count"),))

    def plan(self, params: PurgeRunsParams, *, chunks: int, db: Session) -> list[Spec]:
        cutoff = utcnow() - timedelta(days=params.older_than_days)
        total = db.scalar(select(func.count()).select_from(Run).where(*_purgeable(cutoff)))
        batches = -(-total // DELETE_BATCH)
        return [{"cutoff": cutoff.isoformat(), "batch": index} for index in range(batches)]

    def process(self, spec: Spec, params: PurgeRunsParams, *, db: Session) -> Partial:
        # Deleted in the same transaction that stores this partial: a chunk that
        # runs twice deletes and counts each run exactly once.
        cutoff = datetime.fromisoformat(spec["cutoff"])
        # SKIP LOCKED keeps parallel chunks on PostgreSQL off each other's rows;
        # SQLite serializes writers, so it needs no row locks.
        ids = db.scalars(
            select(Run.id)
            .where(*_purgeable(cutoff))
            .order_by(Run.id)
            .limit(DELETE_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        if not ids:
            return {"deleted_runs": 0}
        db.execute(delete(RunChunk).where(RunChunk.run_id.in_(ids)))
        deleted = db.execute(delete(Run).where(Run.id.in_(ids)))
        return {"deleted_runs": deleted.rowcount}

    def reduce(self, partials: list[Partial]) -> dict[str, Any]:
        return {"deleted_runs": sum(partial["deleted_runs"] for partial in partials)}


def _purgeable(cutoff: datetime) -> list[Any]:
    return [Run.created_at < cutoff, Run.status.in_(FINISHED_STATES)]
