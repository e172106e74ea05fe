"""The run engine end to end through a real worker, Redis and database."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select

from batch import runs
from batch.constants import TASK_FINISH_RUN, TASK_RUN_CHUNK, TASK_START_RUN
from batch.core import Core
from batch.models import Run, RunChunk
from tests.conftest import wait_for_run


def expected_sum(n: int) -> int:
    return (n - 1) * n * (2 * n - 1) // 6


def test_chunked_run_aggregates_exactly(core: Core, celery_app: Celery, worker) -> None:
    run_id = runs.submit_run(core, celery_app, "tests.sum_squares", {"n": "5000"}, trigger="test")
    run = wait_for_run(core, run_id)
    assert run.status == "succeeded", run.error
    assert run.result == {"sum": expected_sum(5000)}
    # Two worker processes x chunks_per_process (4) = 8 chunks, all stored once.
    assert run.chunk_count == 8
    with core.transaction() as session:
        chunks = session.scalars(
            select(RunChunk).where(RunChunk.run_id == run_id).order_by(RunChunk.chunk_index)
        ).all()
    assert [c.chunk_index for c in chunks] == list(range(8))
    assert {c.status for c in chunks} == {"succeeded"} and {c.attempts for c in chunks} == {1}


def test_chunk_delivered_twice_changes_nothing(core: Core, celery_app: Celery, worker) -> None:
    run_id = runs.submit_run(core, celery_app, "tests.sum_squares", {"n": 3000}, trigger="test")
    run = wait_for_run(core, run_id)
    assert run.result == {"sum": expected_sum(3000)}
    with core.transaction() as session:
        chunk = session.get(RunChunk, (run_id, 2))
    spec = {"first": 750, "last": 1124}
    again = celery_app.send_task(
        TASK_RUN_CHUNK, args=(run_id, "tests.sum_squares", 2, spec, run.params), queue="default"
    )
    assert again.get(timeout=30) is False
    celery_app.send_task(TASK_FINISH_RUN, args=([], run_id), queue="default")
    with core.transaction() as session:
        after = session.get(RunChunk, (run_id, 2))
    assert (after.partial, after.attempts) == (chunk.partial, chunk.attempts)
    assert wait_for_run(core, run_id).result == {"sum": expected_sum(3000)}


def test_failing_chunk_fails_the_run_visibly(core: Core, celery_app: Celery, worker) -> None:
    run_id = runs.submit_run(
        core, celery_app, "tests.sum_squares", {"n": 800, "fail_chunk": 500}, trigger="test"
    )
    run = wait_for_run(core, run_id)
    assert run.status == "failed"
    assert "chunk 5: ValueError: chunk with item 500 failed on purpose" in run.error
    assert run.result is None


def test_start_run_delivered_twice_plans_once(core: Core, celery_app: Celery, worker: Path) -> None:
    run_id = runs.submit_run(core, celery_app, "tests.sum_squares", {"n": 2000}, trigger="test")
    with core.transaction() as session:
        params = session.get(Run, run_id).params
    celery_app.send_task(
        TASK_START_RUN,
        kwargs={"job": "tests.sum_squares", "params": params, "run_id": run_id, "trigger": "test"},
        queue="default",
        ignore_result=True,
    )
    run = wait_for_run(core, run_id)
    assert run.result == {"sum": expected_sum(2000)}
    ignored = f"run {run_id} already started: duplicate delivery ignored"
    deadline = time.monotonic() + 10
    while ignored not in worker.read_text():
        assert time.monotonic() < deadline, "the second start_run was not ignored"
        time.sleep(0.1)
    with core.transaction() as session:
        attempts = session.scalars(select(RunChunk.attempts).where(RunChunk.run_id == run_id)).all()
    assert attempts == [1] * 8


def test_a_fire_for_a_job_that_is_gone_fails_visibly(
    core: Core, celery_app: Celery, worker: Path
) -> None:
    fired_at = "2026-11-25T10:00:00+00:00"
    celery_app.send_task(
        TASK_START_RUN,
        kwargs={
            "job": "tests.removed_job", "params": {}, "trigger": "schedule:old",
            "schedule": "old", "scheduled_for": fired_at,
        },
        queue="default",
        ignore_result=True,
    )  # fmt: skip
    run_id = runs.scheduled_run_id("old", datetime.fromisoformat(fired_at))
    run = wait_for_run(core, run_id)
    assert (run.status, run.error) == (
        "failed",
        "unknown job 'tests.removed_job' on this worker: workers load jobs when they start,"
        " so restart them after adding a job",
    )


def test_finish_never_finalizes_while_a_chunk_is_missing(core: Core) -> None:
    started = datetime.now(UTC)
    with core.transaction() as session:
        session.add(
            Run(id="partial", job="tests.sum_squares", params={}, status="running",
                trigger="test", queue="default", chunk_count=2, started_at=started)
        )  # fmt: skip
        session.add(
            RunChunk(run_id="partial", chunk_index=0, status="succeeded", partial={"sum": 5})
        )
    with pytest.raises(runs.MissingChunks, match="1 of 2 chunks stored"):
        runs.finish_run(core, "partial")
    with core.transaction() as session:
        run = session.get(Run, "partial")
        assert (run.status, run.result) == ("running", None)
        run.started_at = started - timedelta(seconds=core.settings.finish_deadline_seconds + 1)
    runs.finish_run(core, "partial")
    with core.reading() as session:
        run = session.get(Run, "partial")
    assert (run.status, run.result) == ("failed", None)
    assert run.error == "gave up waiting for chunks: 1 of 2 chunks stored"


def _running_run(core: Core, run_id: str, job: str, params: dict, specs: list[dict]) -> None:
    """A run as start_run leaves it, its plan in SQL, with no chord behind it."""
    with core.transaction() as session:
        session.add(
            Run(id=run_id, job=job, params=params, status="running", trigger="test",
                queue="default", chunk_count=len(specs), started_at=datetime.now(UTC))
        )  # fmt: skip
        for index, spec in enumerate(specs):
            session.add(RunChunk(run_id=run_id, chunk_index=index, status="pending", spec=spec))


def test_the_chunk_storing_the_last_partial_aggregates_the_run(core: Core) -> None:
    # No chord and no callback here: the chunks alone finish the run, one hop earlier.
    specs = [{"first": 0, "last": 9}, {"first": 10, "last": 24}]
    _running_run(core, "last", "tests.sum_squares", {"n": 25}, specs)
    assert runs.run_chunk(core, "last", "tests.sum_squares", 0, specs[0], {"n": 25}, node="a")
    with core.reading() as session:
        run = session.get(Run, "last")
    assert (run.status, run.result) == ("running", None)
    assert runs.run_chunk(core, "last", "tests.sum_squares", 1, specs[1], {"n": 25}, node="b")
    with core.reading() as session:
        run = session.get(Run, "last")
        stored = session.scalars(select(RunChunk.partial).where(RunChunk.run_id == "last")).all()
    assert run.status == "succeeded"
    assert run.result == {"sum": sum(partial["sum"] for partial in stored)} == {"sum": 4900}
    # The chord callback arriving afterwards changes nothing.
    runs.finish_run(core, "last")
    with core.reading() as session:
        again = session.get(Run, "last")
    assert (again.status, again.result, again.finished_at) == (
        "succeeded", {"sum": 4900}, run.finished_at,
    )  # fmt: skip


def test_a_reduce_that_raises_fails_the_run_and_keeps_the_partials(core: Core) -> None:
    modules = (*core.settings.job_modules, "tests.jobs_for_errors")
    core = Core(replace(core.settings, job_modules=modules))
    specs = [{"first": 0, "last": 9}]
    params = {"n": 10, "fail_at": -1}
    _running_run(core, "bad", "tests.bad_reduce", params, specs)
    assert runs.run_chunk(core, "bad", "tests.bad_reduce", 0, specs[0], params, node="a")
    with core.reading() as session:
        run = session.get(Run, "bad")
        chunk = session.get(RunChunk, ("bad", 0))
    assert (run.status, run.result) == ("failed", None)
    assert run.error == "aggregating failed: ArithmeticError: cannot add up 1 partials"
    assert (chunk.status, chunk.partial) == ("succeeded", {"sum": 285})
    core.dispose()
