"""Running a failed run again: the whole run as a new one, or its failed chunks in place.

A new run (``retry_run``) plans again from the params; retrying chunks
(``retry_failed_chunks``) reuses the run, its plan and the partials its chunks stored, and
runs only the chunks that stored none, from their specs in SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

from celery import Celery
from sqlalchemy import select, update

from batch import queries, runs
from batch.constants import TASK_LAUNCH_CHUNKS
from batch.core import Core
from batch.db import utcnow
from batch.exceptions import Conflict
from batch.models import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    AuditEntry,
    Run,
    RunChunk,
)

log = logging.getLogger(__name__)

#: The audit log's action when a run's failed chunks are run again (object type "run").
RETRY_CHUNKS = "retry chunks"


def retry_run(core: Core, celery: Celery, run_id: str, *, trigger: str) -> str:
    """Submit a new run of a failed or cancelled run's job with its params; returns its id.

    ``trigger`` names who asks (``user:ann``); the new run's trigger adds "(retry of <id>)".
    Raises NotFound for an unknown run and Conflict unless the run failed.
    """
    with core.reading() as session:
        run = queries.find_run(session, run_id)
        job, params, status = run.job, run.params, run.status
    if status not in (FAILED, CANCELLED):
        raise Conflict(f"run {run_id} is {status}: only a failed or cancelled run can be retried")
    return runs.submit_run(core, celery, job, params, trigger=f"{trigger} (retry of {run_id})")


def retry_failed_chunks(core: Core, celery: Celery, run_id: str, *, actor: str) -> list[int]:
    """Run again, in the same run, the chunks of a failed or cancelled run that stored no
    partial; returns their indexes. The run is running again (started now); the partials
    already stored stay, and the aggregate reduces every chunk's partial once, as always.

    Raises NotFound, and Conflict for a run that did not fail or was not cancelled, that was
    never planned, whose chunks all succeeded (its aggregate failed: retry the whole run),
    or that was planned before chunk specs were stored in SQL. The change is audited.
    """
    now = utcnow()
    with core.transaction() as session:
        run = queries.find_run(session, run_id)
        core.jobs.get(run.job)  # UnknownJob: no worker could run the chunks
        chunks = list(
            session.scalars(
                select(RunChunk).where(RunChunk.run_id == run.id).order_by(RunChunk.chunk_index)
            )
        )
        states = [ChunkState(c.chunk_index, c.status, c.spec is not None) for c in chunks]
        indexes = chunks_to_retry(run.id, run.status, run.chunk_count, states)
        before = {"status": run.status, "error": run.error}
        reopened = session.execute(
            update(Run)
            .where(Run.id == run.id, Run.status == run.status)
            .values(status=RUNNING, error=None, result=None, started_at=now, finished_at=None)
        )
        if reopened.rowcount != 1:
            raise Conflict(f"run {run.id} changed meanwhile: look at it again")
        session.execute(
            update(RunChunk)
            .where(RunChunk.run_id == run.id, RunChunk.chunk_index.in_(indexes))
            .values(
                status=PENDING, attempts=0, sends=1, sent_at=now, node=None, error=None,
                traceback=None, started_at=None, finished_at=None,
            )
        )  # fmt: skip
        session.add(
            AuditEntry(
                at=now, actor=actor, action=RETRY_CHUNKS, object_type="run", object_name=run.id,
                before=before, after={"status": RUNNING, "chunks": indexes},
            )
        )  # fmt: skip
        queue, retried_id = run.queue, run.id
    log.info("run %s: chunks %s retried by %s", retried_id, indexes, actor)
    # A worker sends the chord: a chord sent from here would subscribe this process to the
    # result of every chunk. If this message is lost, the chunks wait in SQL as `pending`,
    # and the recovery sweep sends them.
    try:
        celery.send_task(
            TASK_LAUNCH_CHUNKS,
            kwargs={"run_id": retried_id, "indexes": indexes},
            queue=queue,
            ignore_result=True,
        )
    except queries.DOWN_ERRORS as exc:
        log.warning(
            "run %s: chunks %s left for the recovery sweep to send: %s", retried_id, indexes, exc
        )
    return indexes


def launch_pending_chunks(core: Core, celery: Celery, run_id: str, indexes: list[int]) -> None:
    """In a worker: send, as a chord that aggregates the run, the chunks ``indexes`` of a
    running run that are still pending (a chunk sent again meanwhile is not sent twice)."""
    with core.reading() as session:
        run = session.get(Run, run_id)
        if run is None or run.status != RUNNING:
            return
        chunks = session.scalars(
            select(RunChunk)
            .where(
                RunChunk.run_id == run_id,
                RunChunk.chunk_index.in_(indexes),
                RunChunk.status == PENDING,
            )
            .order_by(RunChunk.chunk_index)
        )
        targets = [(chunk.chunk_index, chunk.spec or {}) for chunk in chunks]
        job, params, queue = core.jobs.get(run.job), run.params, run.queue
    if targets:
        runs.launch_chunks(
            celery, job, run_id, targets, params, queue=queue, priority=None, sent_at=utcnow()
        )


class ChunkState(NamedTuple):
    """What deciding a chunk retry needs to know of a chunk."""

    index: int
    status: str
    has_spec: bool


def chunks_to_retry(
    run_id: str, status: str, chunk_count: int | None, chunks: Sequence[ChunkState]
) -> list[int]:
    """The indexes of the chunks that ``retry_failed_chunks`` would run again (those that
    stored no partial); Conflict saying why when it cannot."""
    if status not in (FAILED, CANCELLED):
        raise Conflict(
            f"run {run_id} is {status}: only the chunks of a failed or cancelled run can be retried"
        )
    if chunk_count is None:
        raise Conflict(f"run {run_id} failed before it was planned: retry the whole run")
    redo = [chunk for chunk in chunks if chunk.status != SUCCEEDED]
    if not redo:
        raise Conflict(
            f"every chunk of run {run_id} succeeded and aggregating them failed:"
            " retry the whole run"
        )
    if len(chunks) != chunk_count or not all(chunk.has_spec for chunk in redo):
        raise Conflict(
            f"run {run_id} was planned before chunk specs were stored: retry the whole run"
        )
    return [chunk.index for chunk in redo]
