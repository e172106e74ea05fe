"""A job whose chunks take a while, for the recovery tests (loaded through BATCH_JOB_MODULES)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from pydantic import Field
from sqlalchemy import event
from sqlalchemy.orm import Session

from batch.jobs import Job, Params, Partial, Spec, split_range


class SlowParams(Params):
    n: int = Field(default=8000, ge=0)
    seconds: float = Field(default=1.0, ge=0, le=30)
    #: The chunk holding this item kills its own worker process (kill -9), every time.
    die_at: int | None = None
    #: The worker process planning the run kills itself once the claim and plan commit,
    #: before the chord is sent.
    die_after_plan: bool = False
    #: The first plan creates this file and then waits a minute, its run not committed yet,
    #: for the test to kill its node; later plans find the file and go on.
    pause_first_plan: str | None = None


class SlowSquares(Job):
    """Sum of i*i for i in 0..n-1; each chunk sleeps ``seconds`` first, so faults land mid-run.

    It declares no queue: it runs on the first configured queue.
    """

    name = "tests.slow_squares"
    params_model = SlowParams

    def plan(self, params: SlowParams, *, chunks: int, db: Session) -> list[Spec]:
        if params.pause_first_plan and not os.path.exists(params.pause_first_plan):
            open(params.pause_first_plan, "x").close()
            time.sleep(60)
        if params.die_after_plan:
            event.listen(db, "after_commit", lambda _session: os.kill(os.getpid(), signal.SIGKILL))
        return [{"first": lo, "last": hi} for lo, hi in split_range(0, params.n - 1, chunks)]

    def process(self, spec: Spec, params: SlowParams, *, db: Session) -> Partial:
        if params.die_at is not None and spec["first"] <= params.die_at <= spec["last"]:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(params.seconds)
        return {"sum": sum(i * i for i in range(spec["first"], spec["last"] + 1))}

    def reduce(self, partials: list[Partial]) -> dict[str, Any]:
        return {"sum": sum(partial["sum"] for partial in partials)}
