"""Jobs that exist only for the tests (loaded through BATCH_JOB_MODULES)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field
from sqlalchemy.orm import Session

from batch.constants import QUEUE_REPORTS
from batch.jobs import Job, Params, Partial, Spec, split_range


class SumParams(Params):
    n: int = Field(default=1000, ge=0)
    fail_chunk: int | None = None
    #: When given, ``fail_chunk`` fails only while this file exists (an outage that ends).
    fail_while_file: str | None = None


class SumSquares(Job):
    """Sum of i*i for i in 0..n-1, chunked; ``fail_chunk`` makes one chunk raise."""

    name = "tests.sum_squares"
    params_model = SumParams
    min_chunk_items = 10

    def plan(self, params: SumParams, *, chunks: int, db: Session) -> list[Spec]:
        return [{"first": lo, "last": hi} for lo, hi in split_range(0, params.n - 1, chunks)]

    def process(self, spec: Spec, params: SumParams, *, db: Session) -> Partial:
        index = spec["first"]
        failing = params.fail_while_file is None or os.path.exists(params.fail_while_file)
        if params.fail_chunk is not None and spec["first"] <= params.fail_chunk <= spec["last"]:
            if failing:
                raise ValueError(f"chunk with item {index} failed on purpose")
        return {"sum": sum(i * i for i in range(spec["first"], spec["last"] + 1))}

    def reduce(self, partials: list[Partial]) -> dict[str, Any]:
        return {"sum": sum(partial["sum"] for partial in partials)}


class SumSquaresOnReports(SumSquares):
    """The same job routed to the `reports` queue, for tests of several worker nodes."""

    name = "tests.sum_squares_reports"
    queue = QUEUE_REPORTS
