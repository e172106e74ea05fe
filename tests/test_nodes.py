"""Several worker nodes: a job's chunks are shared between them and the aggregate stays exact."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select

from batch import capacity, runs
from batch.core import Core
from batch.models import RunChunk
from batch.processes import start_worker, stop_process
from tests.conftest import ROOT, settings_env, wait_for_run
from tests.test_engine import expected_sum

NODES = {"node-a": ("default", "reports"), "node-b": ("reports", "cleanups")}


@pytest.fixture
def two_nodes(core: Core, worker: Path, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Two more worker nodes with their own names and queues (both consume `reports`)."""
    logs, processes = {}, []
    try:
        for name, queues in NODES.items():
            logs[name] = tmp_path / f"{name}.log"
            processes.append(
                start_worker(
                    settings_env(core.settings), logs[name], name=name, queues=queues,
                    redis_url=core.settings.redis_url, cwd=ROOT,
                )
            )  # fmt: skip
        yield logs
    finally:
        for process in processes:
            stop_process(process)


def chunk_tasks_run(log: Path) -> int:
    # Celery names a chunk's task by its shadow, "run <id> chunk <i>" (runs._chunk_signature).
    return len(re.findall(r"Task run \S+ chunk \d+\[[^\]]+\] succeeded", log.read_text()))


def test_chunks_are_shared_between_nodes_and_the_aggregate_is_exact(
    core: Core, celery_app: Celery, two_nodes: dict[str, Path]
) -> None:
    # A reports-queue job; at least 6 processes (this session's worker and the two nodes)
    # write their partials to the same database at once.
    n = 4_000_000
    time.sleep(capacity.CACHE_SECONDS + 0.5)  # let the planner see the new nodes' capacity
    run_id = runs.submit_run(
        core, celery_app, "tests.sum_squares_reports", {"n": n}, trigger="test"
    )
    run = wait_for_run(core, run_id, timeout=120)
    assert run.status == "succeeded", run.error
    assert run.result == {"sum": expected_sum(n)}
    with core.reading() as session:
        attempts = session.scalars(select(RunChunk.attempts).where(RunChunk.run_id == run_id)).all()
    # Six processes announced for `reports` x 4 chunks each; every chunk stored once, first try.
    assert len(attempts) == run.chunk_count >= 24 and set(attempts) == {1}
    shares = {name: chunk_tasks_run(log) for name, log in two_nodes.items()}
    assert all(count > 0 for count in shares.values()), shares
    for log in two_nodes.values():
        assert "database is locked" not in log.read_text()
