"""Retrying a failed run's failed chunks in place: only they run again, on a real worker, and
the aggregate is exact; what cannot be retried that way says why and changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select

from batch import retries, runs
from batch.core import Core
from batch.exceptions import Conflict
from batch.models import AuditEntry, Run, RunChunk
from tests.conftest import wait_for_run
from tests.test_engine import expected_sum

SUMS = "tests.sum_squares"


def chunk_rows(core: Core, run_id: str) -> dict[int, tuple[str, int, object, object]]:
    with core.reading() as session:
        rows = session.scalars(select(RunChunk).where(RunChunk.run_id == run_id))
        return {c.chunk_index: (c.status, c.attempts, c.started_at, c.finished_at) for c in rows}


def failed_run(core: Core, celery_app: Celery, outage: Path, n: int = 800) -> str:
    """A run of 8 chunks whose chunk 5 fails while ``outage`` exists; returns once the run
    failed and every other chunk has stored its partial."""
    outage.touch()
    params = {"n": n, "fail_chunk": 500, "fail_while_file": str(outage)}
    run_id = runs.submit_run(core, celery_app, SUMS, params, trigger="test")
    assert wait_for_run(core, run_id).status == "failed"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses = [row[0] for row in chunk_rows(core, run_id).values()]
        if statuses.count("succeeded") == 7:
            return run_id
        time.sleep(0.05)
    raise AssertionError(f"the other chunks did not finish: {chunk_rows(core, run_id)}")


def test_only_the_failed_chunk_runs_again_and_the_aggregate_is_exact(
    core: Core, celery_app: Celery, worker: Path, tmp_path: Path
) -> None:
    outage = tmp_path / "outage"
    run_id = failed_run(core, celery_app, outage)
    before = chunk_rows(core, run_id)
    assert before[5][0] == "failed" and len(before) == 8

    outage.unlink()  # the cause is gone
    assert retries.retry_failed_chunks(core, celery_app, run_id, actor="user:ann") == [5]
    run = wait_for_run(core, run_id)

    assert (run.status, run.error) == ("succeeded", None)
    assert run.result == {"sum": expected_sum(800)}
    with core.reading() as session:  # the aggregate is the sum of the stored partials, once each
        partials = session.scalars(select(RunChunk.partial).where(RunChunk.run_id == run_id))
        assert run.result["sum"] == sum(partial["sum"] for partial in partials)
    after = chunk_rows(core, run_id)
    assert {i: after[i] for i in after if i != 5} == {i: before[i] for i in before if i != 5}
    assert after[5][:2] == ("succeeded", 1) and after[5][2] > before[5][3]
    with core.reading() as session:
        (entry,) = session.scalars(select(AuditEntry).where(AuditEntry.object_name == run_id))
    assert (entry.actor, entry.action, entry.object_type) == ("user:ann", "retry chunks", "run")
    assert entry.before["status"] == "failed" and entry.after == {
        "status": "running",
        "chunks": [5],
    }


def test_a_chunk_that_fails_again_fails_the_run_again(
    core: Core, celery_app: Celery, worker: Path, tmp_path: Path
) -> None:
    outage = tmp_path / "outage"
    run_id = failed_run(core, celery_app, outage)
    assert retries.retry_failed_chunks(core, celery_app, run_id, actor="user:ann") == [5]
    run = wait_for_run(core, run_id)
    assert run.status == "failed" and "chunk 5: ValueError" in run.error
    assert [row[0] for row in chunk_rows(core, run_id).values()].count("succeeded") == 7


@pytest.mark.parametrize(
    ("status", "chunk_count", "chunks", "message"),
    [
        ("succeeded", 2, [(0, "succeeded", True)], "is succeeded: only the chunks of a failed"),
        ("running", 2, [(0, "failed", True)], "is running: only the chunks of a failed"),
        ("failed", None, [], "failed before it was planned: retry the whole run"),
        ("failed", 1, [(0, "succeeded", True)], "aggregating them failed: retry the whole run"),
        ("failed", 2, [(0, "failed", True)], "planned before chunk specs were stored"),
        ("failed", 1, [(0, "failed", False)], "planned before chunk specs were stored"),
    ],
)
def test_what_cannot_be_retried_in_place_says_why(
    status: str, chunk_count: int | None, chunks: list[tuple[int, str, bool]], message: str
) -> None:
    states = [retries.ChunkState(*chunk) for chunk in chunks]
    with pytest.raises(Conflict, match=message):
        retries.chunks_to_retry("r1", status, chunk_count, states)


def test_a_refused_retry_writes_nothing(core: Core, celery_app: Celery, worker: Path) -> None:
    run_id = runs.submit_run(core, celery_app, SUMS, {"n": 100}, trigger="test")
    done = wait_for_run(core, run_id)
    with pytest.raises(Conflict, match="is succeeded"):
        retries.retry_failed_chunks(core, celery_app, run_id, actor="user:ann")
    with core.reading() as session:
        again = session.get(Run, run_id)
        assert (again.status, again.finished_at, again.result) == (
            done.status,
            done.finished_at,
            done.result,
        )
        assert session.scalars(select(AuditEntry)).all() == []
