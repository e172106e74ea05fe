"""Every run ends: real faults (kill -9 of worker nodes, FLUSHALL, a restarted redis-server)
injected mid-run, and the recovery sweep finishing each run from SQL.

Each test has a redis-server of its own (the faults would hit every other test otherwise) and
worker nodes of its own on a queue of its own, with short timings: a sweep every 0.5 s, a
message lost after 3 s in an empty queue, a node gone after 3 s without its announcement.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from batch import backfills, capacity, runs, schedules
from batch.constants import TASK_START_RUN
from batch.core import Core
from batch.lab import Lab, wait_until
from batch.models import RUNNING, Run, RunChunk, Schedule
from batch.redis_broker import UNACKED_KEY
from batch.sweep import sweep
from tests.conftest import counted_lab, own_database, wait_for_run
from tests.test_engine import expected_sum

#: Within this long of a fault, every run must have ended (the issue's target).
RECOVERY_SECONDS = 60
QUEUE = "recovery"
JOB = "tests.slow_squares"


def recovery_lab(core: Core, directory: Path, **changes: Any) -> ContextManager[Lab]:
    """The recovery tests' lab: its own redis-server, queue and short timings."""
    return counted_lab(
        core, directory, JOB, job_modules=(*core.settings.job_modules, "tests.jobs_for_recovery"),
        queues=(QUEUE, "reports", "cleanups"), sweep_interval_seconds=0.5, stall_seconds=3,
        worker_ttl_seconds=3, **changes,
    )  # fmt: skip


@pytest.fixture
def lab(core: Core, tmp_path: Path) -> Iterator[Lab]:
    """A lab on the suite's database, with its own redis-server, queue and short timings."""
    with recovery_lab(core, tmp_path) as lab:
        yield lab


def submit(lab: Lab, n: int = 8000, seconds: float = 1.0) -> str:
    """A run of 8 chunks (2 processes x 4) of ``seconds`` each."""
    return lab.submit(JOB, {"n": n, "seconds": seconds})


def assert_exact_and_nothing_going(lab: Lab, run_ids: list[str], n: int, since: float) -> None:
    for run_id in run_ids:
        left = RECOVERY_SECONDS - (time.monotonic() - since)
        run = wait_for_run(lab.core, run_id, timeout=max(left, 1))
        assert (run.status, run.error) == ("succeeded", None), lab.logs()[-4000:]
        assert run.result == {"sum": expected_sum(n)}
    assert lab.going() == 0


def chunk_rows(lab: Lab, run_id: str) -> dict[int, RunChunk]:
    with lab.core.reading() as session:
        rows = session.scalars(select(RunChunk).where(RunChunk.run_id == run_id))
        return {chunk.chunk_index: chunk for chunk in rows}


def kill_node_mid_run(lab: Lab, then_start: str) -> tuple[str, dict[int, RunChunk]]:
    """Kill -9 node-a while it runs chunks of a run, start node ``then_start``, wait for the
    run to end exact; the run id and the chunks node-a held, as they are now."""
    node = lab.start_node("node-a")
    run_id = submit(lab)
    wait_until(lambda: lab.chunks(run_id, RUNNING) >= 1)
    lab.kill_node(node)
    killed = time.monotonic()
    # Nothing moves until the next node starts: these are the chunks that died with node-a.
    held = [i for i, chunk in chunk_rows(lab, run_id).items() if chunk.status == RUNNING]
    lab.start_node(then_start)
    assert_exact_and_nothing_going(lab, [run_id], 8000, killed)
    after = chunk_rows(lab, run_id)
    assert held and all(after[i].attempts == 2 for i in held)
    return run_id, {i: after[i] for i in held}


def test_a_worker_node_killed_mid_run(lab: Lab) -> None:
    _, held = kill_node_mid_run(lab, then_start="node-b")
    # Each ran again on node-b: sent again by the sweep on Redis (RabbitMQ requeues by itself).
    assert all(chunk.node.startswith("node-b@") for chunk in held.values())


def test_a_node_killed_and_started_again_under_the_same_name(lab: Lab) -> None:
    # The new node announces the hostname the chunks record: its start time tells them apart.
    kill_node_mid_run(lab, then_start="node-a")
    if lab.settings.effective_broker_url == lab.settings.redis_url:
        # RabbitMQ requeues a dropped connection's messages by itself, before any sweep.
        assert "restarted since it began: sent again" in lab.logs()


def test_flushall_mid_run(lab: Lab) -> None:
    lab.start_node("node-a")
    run_id = submit(lab)
    wait_until(lambda: lab.chunks(run_id, RUNNING) >= 1)
    lab.core.redis.flushall()
    flushed = time.monotonic()
    assert_exact_and_nothing_going(lab, [run_id], 8000, flushed)


def test_redis_killed_and_restarted_mid_run(lab: Lab) -> None:
    lab.start_node("node-a")
    run_id = submit(lab)
    wait_until(lambda: lab.chunks(run_id, RUNNING) >= 1)
    lab.kill_redis()
    killed = time.monotonic()
    time.sleep(2)
    lab.start_redis()
    assert_exact_and_nothing_going(lab, [run_id], 8000, killed)


def test_a_worker_killed_between_the_claim_and_the_chord_launch(lab: Lab) -> None:
    lab.start_node("node-a")
    run_id = runs.submit_run(
        lab.core, lab.celery, JOB, {"n": 8000, "seconds": 0.2, "die_after_plan": True},
        trigger="test",
    )  # fmt: skip
    wait_until(lambda: lab.chunks(run_id, "pending") == 8)
    claimed = time.monotonic()
    assert_exact_and_nothing_going(lab, [run_id], 8000, claimed)
    assert {chunk.sends for chunk in chunk_rows(lab, run_id).values()} == {2}
    assert "its message was lost: sent again" in lab.logs()


def test_a_burst_of_runs_with_the_node_killed_as_they_start(lab: Lab) -> None:
    node = lab.start_node("node-a")
    run_ids = [submit(lab, n=4000, seconds=0.2)]
    time.sleep(0.08)
    run_ids += [submit(lab, n=4000, seconds=0.2) for _ in range(9)]
    lab.kill_node(node)
    killed = time.monotonic()
    lab.start_node("node-b")
    assert_exact_and_nothing_going(lab, run_ids, 4000, killed)


def test_every_node_stopped_mid_backlog_then_started_again(lab: Lab) -> None:
    node = lab.start_node("node-a")
    run_ids = [submit(lab, n=4000, seconds=0.3) for _ in range(12)]
    wait_until(lambda: lab.chunks(run_ids[0], RUNNING) >= 1)
    node.send_signal(signal.SIGINT)  # Ctrl-C, as honcho passes it on: a warm shutdown
    node.wait(timeout=60)
    stopped = time.monotonic()
    lab.start_node("node-a")  # the same name, as `make run` again would start it
    assert_exact_and_nothing_going(lab, run_ids, 4000, stopped)


def test_a_chunk_whose_process_dies_every_time_fails_the_run_naming_it(lab: Lab) -> None:
    lab.settings = replace(lab.settings, chunk_max_attempts=2)
    lab.start_node("node-a")
    run_id = runs.submit_run(
        lab.core, lab.celery, JOB, {"n": 800, "seconds": 0, "die_at": 500}, trigger="test"
    )
    run = wait_for_run(lab.core, run_id, timeout=RECOVERY_SECONDS)
    with lab.core.reading() as session:
        chunk = session.scalars(
            select(RunChunk).where(RunChunk.run_id == run_id, RunChunk.status == "failed")
        ).one()
    reason = (
        "started 2 times without finishing: its worker process or node was lost each time"
        " (limit BATCH_CHUNK_MAX_ATTEMPTS=2)"
    )
    assert (run.status, chunk.error) == ("failed", reason)
    assert run.error == f"chunk {chunk.chunk_index}: {reason}"
    assert chunk.spec["first"] <= 500 <= chunk.spec["last"]
    assert lab.going() == 0


def test_cancel_of_a_running_run(lab: Lab) -> None:
    lab.start_node("node-a")
    run_id = submit(lab, n=8000, seconds=1.0)
    wait_until(lambda: lab.chunks(run_id, RUNNING) == 2)
    cancelled = runs.cancel_run(lab.core, run_id[:8], actor="user:ann")
    assert (cancelled.id, cancelled.status, cancelled.error) == (
        run_id, "cancelled", "cancelled by user:ann"
    )  # fmt: skip
    # The two running chunks finish and store their partials; the six others never start,
    # and the sweep leaves the run alone: it ended.
    wait_until(lambda: lab.chunks(run_id, "succeeded") == 2, timeout=10)
    time.sleep(3 * lab.settings.sweep_interval_seconds + 1.5)
    chunks = chunk_rows(lab, run_id)
    assert sorted(c.status for c in chunks.values()) == ["cancelled"] * 6 + ["succeeded"] * 2
    assert all(c.attempts == 0 for c in chunks.values() if c.status == "cancelled")
    run = wait_for_run(lab.core, run_id)
    assert (run.status, run.result) == ("cancelled", None)
    assert lab.going() == 0


def test_a_message_taken_from_a_busy_queue_by_a_node_gone_is_sent_again(lab: Lab) -> None:
    if lab.settings.effective_broker_url != lab.settings.redis_url:
        pytest.skip("reads the queue's lists on a Redis broker (RabbitMQ requeues by itself)")
    # No node runs: the queue keeps what it gets. A node that died took the oldest message.
    sweep(lab.core, lab.celery)  # the sweep has been running: this Redis has its epoch
    taken, waiting = submit(lab), submit(lab)
    lab.core.redis.rpop(QUEUE)
    assert lab.core.redis.llen(QUEUE) == 1
    assert sweep(lab.core, lab.celery).starts_sent == []  # not stalled yet
    time.sleep(lab.settings.stall_seconds + 0.5)
    # The queue is not empty, but the message waiting there was sent after the one taken.
    assert sweep(lab.core, lab.celery).starts_sent == [taken]
    assert lab.core.redis.llen(QUEUE) == 2
    assert sweep(lab.core, lab.celery).starts_sent == []  # sent again: waits anew
    assert waiting not in sweep(lab.core, lab.celery).starts_sent


def test_a_fire_taken_by_a_node_killed_before_its_run_existed_runs_once(
    lab: Lab, tmp_path: Path
) -> None:
    if lab.settings.effective_broker_url != lab.settings.redis_url:
        pytest.skip("reads kombu's unacknowledged messages on a Redis broker (RabbitMQ requeues)")
    paused = tmp_path / "planning"
    fire = {
        "job": JOB, "params": {"n": 8000, "seconds": 0.2, "pause_first_plan": str(paused)},
        "trigger": "schedule:hourly", "schedule": "hourly",
        "scheduled_for": "2026-11-30T10:00:00+00:00", "overlap": "allow", "deadline_seconds": None,
    }  # fmt: skip
    node = lab.start_node("node-a")
    lab.celery.send_task(TASK_START_RUN, kwargs=fire, queue=QUEUE, ignore_result=True)  # as beat
    wait_until(paused.exists)  # node-a took it and is planning: no run row committed yet
    lab.kill_node(node)
    killed = time.monotonic()
    assert lab.core.redis.hlen(UNACKED_KEY) == 1  # kombu would give it back in an hour
    lab.start_node("node-b")
    run_id = runs.scheduled_run_id("hourly", datetime.fromisoformat(fire["scheduled_for"]))
    assert_exact_and_nothing_going(lab, [run_id], 8000, killed)
    assert "never started (its worker node is gone): recorded and sent again" in lab.logs()
    # The message node-a held, delivered again after all, finds the run done.
    lab.celery.send_task(TASK_START_RUN, kwargs=fire, queue=QUEUE, ignore_result=True)
    wait_until(lambda: "duplicate delivery ignored" in lab.logs(), timeout=20)
    with lab.core.reading() as session:
        fired = session.scalars(select(Run).where(Run.schedule_name == "hourly")).all()
    assert [(run.id, run.status) for run in fired] == [(run_id, "succeeded")]


def test_a_fire_sent_again_is_judged_by_its_schedules_deadline(lab: Lab) -> None:
    # The first start of a fire an hour old was lost; sent again, it is late for its
    # schedule's deadline: it ends skipped and says why, as beat's first message would have.
    fired_at = datetime.now(UTC) - timedelta(hours=1)
    with lab.core.transaction() as session:
        session.add(
            Schedule(name="hourly", job=JOB, params={"n": 80}, interval_seconds=3600,
                     queue=QUEUE, deadline_seconds=60)
        )  # fmt: skip
        run_id = runs.scheduled_run_id("hourly", fired_at)
        session.add(
            Run(id=run_id, job=JOB, params={"n": 80}, trigger="schedule:hourly", queue=QUEUE,
                schedule_name="hourly", scheduled_for=fired_at, sent_at=fired_at)
        )  # fmt: skip
    assert sweep(lab.core, lab.celery).starts_sent == [run_id]
    lab.start_node("node-a")
    run = wait_for_run(lab.core, run_id, timeout=30)
    assert run.status == "skipped"
    assert re.fullmatch(r"skipped: started 36\d\ds late, deadline 60s", run.error), run.error


def test_a_killed_node_stops_counting_for_planning_within_its_ttl(lab: Lab) -> None:
    def processes() -> int:
        nodes = capacity.online_workers(lab.core.redis).values()
        return sum(node["concurrency"] for node in nodes if QUEUE in node["queues"])

    node = lab.start_node("node-a", concurrency=2)
    lab.kill_node(node)
    killed = time.monotonic()
    lab.start_node("node-b", concurrency=1)
    wait_until(lambda: processes() == 1, timeout=lab.settings.worker_ttl_seconds + 2)
    assert time.monotonic() - killed <= lab.settings.worker_ttl_seconds + 1
    # node-b plans for its one process: 1 x BATCH_CHUNKS_PER_PROCESS chunks, not 3 x.
    run_id = submit(lab, seconds=0.1)
    run = wait_for_run(lab.core, run_id, timeout=RECOVERY_SECONDS)
    assert (run.status, run.chunk_count) == ("succeeded", lab.settings.chunks_per_process)
    assert run.result == {"sum": expected_sum(8000)}


@pytest.fixture
def apart(core: Core, tmp_path: Path) -> Iterator[Lab]:
    """The lab above on a database of its own: no other worker drives its backfills."""
    with recovery_lab(core, tmp_path, database_url=own_database(tmp_path)) as lab:
        yield lab


def start_slow_backfill(lab: Lab, fires: int = 10) -> int:
    """A backfill of ``fires`` minutely fires of a slow job on the lab's queue, 3 at a time."""
    data = {"name": "slow-minutely", "job": JOB, "params": {"n": 800, "seconds": 0.2},
            "cron": "* * * * *", "queue": QUEUE}  # fmt: skip
    spec = schedules.validate_schedule(lab.core, data)
    schedules.save_schedule(lab.core, lab.celery, spec, actor="test", mode="create")
    since = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    request = backfills.Request("slow-minutely", since, since + timedelta(minutes=fires),
                                max_running=3)  # fmt: skip
    return backfills.start_backfill(lab.core, lab.celery, request, actor="test").id


def assert_backfill_exact(lab: Lab, backfill_id: int, fires: int, since: float) -> None:
    """The backfill ends done within the recovery time, one exact run per fire."""
    left = RECOVERY_SECONDS - (time.monotonic() - since)
    wait_until(lambda: backfills.get_backfill(lab.core, backfill_id).state == "done", left)
    with lab.core.reading() as session:
        made = session.scalars(select(Run).where(Run.schedule_name == "slow-minutely")).all()
    assert len(made) == len({run.scheduled_for for run in made}) == fires
    assert {(run.status, run.error) for run in made} == {("succeeded", None)}, lab.logs()[-3000:]
    assert {run.result["sum"] for run in made} == {expected_sum(800)}
    assert lab.going() == 0


def test_a_backfill_outlives_the_node_that_drove_it(apart: Lab) -> None:
    lab = apart
    node = lab.start_node("node-a")
    backfill_id = start_slow_backfill(lab)
    wait_until(lambda: backfills.progress(lab.core, backfill_id)["runs"].get("succeeded", 0) >= 2)
    lab.kill_node(node)
    killed = time.monotonic()
    lab.start_node("node-b")  # it takes the driver's lock once node-a's expires
    assert_backfill_exact(lab, backfill_id, 10, killed)


def test_a_backfill_outlives_a_restart_of_redis(apart: Lab) -> None:
    lab = apart
    lab.start_node("node-a")
    backfill_id = start_slow_backfill(lab)
    wait_until(lambda: backfills.progress(lab.core, backfill_id)["runs"].get("succeeded", 0) >= 2)
    lab.kill_redis()
    killed = time.monotonic()
    time.sleep(2)
    lab.start_redis()
    assert_backfill_exact(lab, backfill_id, 10, killed)
