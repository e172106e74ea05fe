"""The benchmark's synthetic CPU job, and the plain Celery chord it is compared with.

Each item costs about 20 us of pure-Python CPU (``ROUNDS`` steps of an LCG).
"""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from pydantic import Field
from sqlalchemy.orm import Session

from batch.jobs import Job, Params, Partial, Spec, split_range

ROUNDS = 240


def work(item: int) -> int:
    """About 20 us of CPU for one item; returns a small deterministic number."""
    x = item
    for _ in range(ROUNDS):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x & 0xFF


def work_range(bounds: tuple[int, int]) -> int:
    """The sum of ``work`` over the inclusive range."""
    first, last = bounds
    return sum(work(item) for item in range(first, last + 1))


class CpuParams(Params):
    items: int = Field(default=100_000, ge=1)


class CpuSum(Job):
    """Sum of ``work(i)`` for i in 0..items-1."""

    name = "bench.cpu_sum"
    params_model = CpuParams
    # 1,000 items are ~20 ms of work: smaller chunks cost more in messages than they gain.
    min_chunk_items = 1_000

    def plan(self, params: CpuParams, *, chunks: int, db: Session) -> list[Spec]:
        ranges = split_range(0, params.items - 1, chunks, min_size=self.min_chunk_items)
        return [{"first": first, "last": last} for first, last in ranges]

    def process(self, spec: Spec, params: CpuParams, *, db: Session) -> Partial:
        return {"sum": work_range((spec["first"], spec["last"]))}

    def reduce(self, partials: list[Partial]) -> dict[str, Any]:
        return {"sum": sum(partial["sum"] for partial in partials)}


@shared_task(name="bench.plain_item")
def plain_item(item: int) -> int:
    """One item of the plain-chord baseline."""
    return work(item)


@shared_task(name="bench.plain_total")
def plain_total(values: list[int]) -> int:
    """The plain-chord baseline's callback."""
    return sum(values)


class SlowParams(Params):
    n: int = Field(default=8000, ge=1)
    seconds: float = Field(default=1.0, ge=0, le=60)


class SlowSum(Job):
    """Sum of i*i for i in 0..n-1; each chunk sleeps ``seconds`` first (a fault lands mid-run)."""

    name = "bench.slow_sum"
    params_model = SlowParams

    def plan(self, params: SlowParams, *, chunks: int, db: Session) -> list[Spec]:
        return [{"first": lo, "last": hi} for lo, hi in split_range(0, params.n - 1, chunks)]

    def process(self, spec: Spec, params: SlowParams, *, db: Session) -> Partial:
        time.sleep(params.seconds)
        return {"sum": sum(i * i for i in range(spec["first"], spec["last"] + 1))}

    def reduce(self, partials: list[Partial]) -> dict[str, Any]:
        return {"sum": sum(partial["sum"] for partial in partials)}


def slow_sum_expected(n: int) -> int:
    """SlowSum's exact result, in closed form."""
    return (n - 1) * n * (2 * n - 1) // 6
