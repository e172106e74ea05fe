"""JSON only: a pickled message is refused by the worker and runs nothing."""

from __future__ import annotations

import time
from pathlib import Path

from celery import Celery

from batch.constants import TASK_START_RUN
from batch.core import Core
from batch.models import Run


def test_worker_refuses_a_pickled_message(core: Core, celery_app: Celery, worker: Path) -> None:
    celery_app.send_task(
        TASK_START_RUN,
        kwargs={"job": "tests.sum_squares", "params": {}, "trigger": "x", "run_id": "pickled"},
        queue="default",
        serializer="pickle",
        ignore_result=True,
    )
    deadline = time.monotonic() + 15
    while "untrusted content of type pickle" not in worker.read_text():
        assert time.monotonic() < deadline, "the worker did not refuse the pickled message"
        time.sleep(0.1)
    with core.reading() as session:
        assert session.get(Run, "pickled") is None
