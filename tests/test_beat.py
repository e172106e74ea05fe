"""Beat with RedBeat end to end: firing, write-through, reconcile after a Redis flush."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select

from batch import schedules
from batch.capacity import online_workers
from batch.core import Core
from batch.entries import BatchEntry
from batch.models import Run
from batch.processes import start_beat
from tests.conftest import settings_env
from tests.test_engine import expected_sum


@pytest.fixture
def beat(core: Core, worker: Path, tmp_path: Path) -> Iterator[Path]:
    log_path = tmp_path / "beat.log"
    process = start_beat(settings_env(core.settings), log_path, tmp_path)
    yield log_path
    process.terminate()
    process.wait(timeout=20)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]


def scheduled_runs(core: Core, name: str) -> list[Run]:
    with core.transaction() as session:
        return list(
            session.scalars(
                select(Run).where(Run.schedule_name == name).order_by(Run.scheduled_for)
            )
        )


def wait_for_runs(core: Core, name: str, count: int, timeout: float = 40) -> list[Run]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [run for run in scheduled_runs(core, name) if run.status == "succeeded"]
        if len(done) >= count:
            return done
        time.sleep(0.2)
    raise AssertionError(f"{name}: fewer than {count} runs succeeded in {timeout}s")


def add_interval_schedule(core: Core, celery: Celery, name: str, seconds: int) -> None:
    spec = schedules.validate_schedule(
        core,
        {
            "name": name,
            "job": "tests.sum_squares",
            "params": {"n": 100},
            "interval_seconds": seconds,
        },
    )
    schedules.save_schedule(core, celery, spec, actor="test", mode="create")


def test_beat_fires_an_interval_schedule_end_to_end(
    core: Core, celery_app: Celery, beat: Path
) -> None:
    add_interval_schedule(core, celery_app, "every-2s", 2)
    runs = wait_for_runs(core, "every-2s", 2)
    assert [run.result for run in runs[:2]] == [{"sum": expected_sum(100)}] * 2
    assert {run.trigger for run in runs} == {"schedule:every-2s"}
    gap = runs[1].scheduled_for - runs[0].scheduled_for
    assert gap == timedelta(seconds=2)


def test_schedules_survive_flushall_without_double_fire(
    core: Core, celery_app: Celery, beat: Path
) -> None:
    add_interval_schedule(core, celery_app, "every-3s", 3)
    before = wait_for_runs(core, "every-3s", 2)
    core.redis.flushall()
    key = BatchEntry.generate_key(celery_app, "every-3s")
    deadline = time.monotonic() + 20
    while not core.redis.exists(key):
        assert time.monotonic() < deadline, "beat did not restore its schedule after FLUSHALL"
        time.sleep(0.1)
    after = wait_for_runs(core, "every-3s", len(before) + 2)
    fires = [run.scheduled_for for run in after]
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(fires)]
    # Every fire is on the 3 s grid and no fire time repeats or comes early.
    assert all(gap >= 3 and gap % 3 == 0 for gap in gaps), gaps
    assert "beat: lock re-acquired" in beat.read_text()
    # Let the worker's capacity key come back before other tests plan chunks.
    while not online_workers(core.redis):
        time.sleep(0.2)
