"""Overlap policies beyond allow and skip: ``buffer_one`` and ``cancel_other``, with real
worker nodes and exact aggregates.

Each fire's start message is sent as beat sends it (the fire's kwargs). The first fire's goes
to a queue read by node-a (2 processes): its run of 8 chunks of 1 s each is going for 4 s.
The later fires' go to a queue read by node-b, idle: they start at once, while the first run
is surely going.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from batch import schedules
from batch.constants import TASK_START_RUN
from batch.lab import Lab, wait_until
from batch.models import CANCELLED, PENDING, RUNNING, Run, RunChunk
from batch.runs import scheduled_run_id
from tests.conftest import counted_lab, own_database, wait_for_run
from tests.test_engine import expected_sum

QUEUE, LATER = "overlap", "overlap-later"
JOB = "tests.slow_squares"
PARAMS = {"n": 800, "seconds": 1.0}
FIRST = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def lab(core, tmp_path: Path) -> Iterator[Lab]:  # noqa: ANN001 - the suite's core fixture
    with counted_lab(
        core, tmp_path, JOB, job_modules=(*core.settings.job_modules, "tests.jobs_for_recovery"),
        queues=(QUEUE, LATER, "reports", "cleanups"), database_url=own_database(tmp_path),
    ) as lab:  # fmt: skip
        yield lab


def add(lab: Lab, overlap: str) -> None:
    data = {"name": overlap, "job": JOB, "params": PARAMS, "cron": "* * * * *",
            "queue": QUEUE, "overlap": overlap}  # fmt: skip
    spec = schedules.validate_schedule(lab.core, data)
    schedules.save_schedule(lab.core, lab.celery, spec, actor="test", mode="create")


def fire(lab: Lab, overlap: str, minute: int, queue: str = QUEUE) -> str:
    """Send the start of the schedule's fire at 09:mm as beat would; its run id."""
    at = FIRST + timedelta(minutes=minute)
    lab.celery.send_task(
        TASK_START_RUN,
        kwargs={"job": JOB, "params": PARAMS, "trigger": f"schedule:{overlap}",
                "schedule": overlap, "scheduled_for": at.isoformat(), "overlap": overlap},
        queue=queue,
    )  # fmt: skip
    return scheduled_run_id(overlap, at)


def run_of(lab: Lab, run_id: str) -> Run | None:
    with lab.core.reading() as session:
        return session.get(Run, run_id)


def status_of(lab: Lab, run_id: str) -> str | None:
    run = run_of(lab, run_id)
    return run.status if run else None


def first_fire_running(lab: Lab, overlap: str) -> str:
    """A schedule with ``overlap``, node-a on its queue and node-b on the later one, and the
    fire at 09:00 running on node-a; its run id."""
    add(lab, overlap)
    lab.start_node("node-a", queues=(QUEUE,))
    lab.start_node("node-b", queues=(LATER,), concurrency=1)
    first = fire(lab, overlap, 0)
    wait_until(lambda: lab.chunks(first, RUNNING) >= 1)
    return first


def test_buffer_one_keeps_one_fire_waiting_and_runs_it_when_the_run_ends(lab: Lab) -> None:
    first = first_fire_running(lab, "buffer_one")
    second = fire(lab, "buffer_one", 1, LATER)
    wait_until(lambda: status_of(lab, second) == "waiting", timeout=10)
    third = fire(lab, "buffer_one", 2, LATER)

    skipped = wait_for_run(lab.core, third, timeout=30)
    assert (skipped.status, skipped.error) == (
        "skipped", f"skipped: run {second} already waits for run {first} (buffer_one)"
    )  # fmt: skip
    done = [wait_for_run(lab.core, run_id, timeout=60) for run_id in (first, second)]
    for run in done:
        assert (run.status, run.result) == ("succeeded", {"sum": expected_sum(800)}), run.error
    # The second fire waited: it started once the first run had ended, not before.
    assert done[1].started_at is not None and done[0].finished_at is not None
    assert done[1].started_at >= done[0].finished_at
    assert lab.going() == 0


def test_cancel_other_cancels_the_run_going_and_the_new_one_is_exact(lab: Lab) -> None:
    first = first_fire_running(lab, "cancel_other")
    second = fire(lab, "cancel_other", 1, LATER)

    replaced = wait_for_run(lab.core, first, timeout=30)
    assert replaced.status == CANCELLED and replaced.result is None
    assert replaced.error == (
        f"cancelled: replaced by run {second}, the fire at {FIRST + timedelta(minutes=1)}"
        " (cancel_other)"
    )
    run = wait_for_run(lab.core, second, timeout=60)
    assert (run.status, run.result) == ("succeeded", {"sum": expected_sum(800)}), run.error
    # The cancelled run's chunks that were still running stored their partials, which change
    # nothing: it stays cancelled with no result, and no chunk of it is left pending.
    time.sleep(2.5)
    after = run_of(lab, first)
    assert after is not None and (after.status, after.result) == (CANCELLED, None)
    with lab.core.reading() as session:
        chunks = session.scalars(select(RunChunk.status).where(RunChunk.run_id == first)).all()
    assert PENDING not in chunks and RUNNING not in chunks
    assert lab.going() == 0
