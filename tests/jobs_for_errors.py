"""A job whose chunk fails deep down with a chained cause, for the chunk error tests."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy.orm import Session

from batch.jobs import Job, Params, Partial, Spec, split_range


class DeepParams(Params):
    n: int = Field(default=800, ge=0)
    #: The chunk holding this item fails ``depth`` calls down, with a chained cause.
    fail_at: int = 500
    depth: int = Field(default=300, ge=0, le=900)


class DeepFailure(Job):
    """Sum of i*i for i in 0..n-1; one chunk fails with a long traceback (a long stack).

    It declares no queue: it runs on the first configured queue.
    """

    name = "tests.deep_failure"
    params_model = DeepParams

    def plan(self, params: DeepParams, *, chunks: int, db: Session) -> list[Spec]:
        return [{"first": lo, "last": hi} for lo, hi in split_range(0, params.n - 1, chunks)]

    def process(self, spec: Spec, params: DeepParams, *, db: Session) -> Partial:
        if spec["first"] <= params.fail_at <= spec["last"]:
            _down(params.depth, params.fail_at)
        return {"sum": sum(i * i for i in range(spec["first"], spec["last"] + 1))}

    def reduce(self, partials: list[Partial]) -> dict[str, Any]:
        return {"sum": sum(partial["sum"] for partial in partials)}


# Two functions calling each other: Python folds a frame repeated in a row into one line,
# alternating frames it prints in full.
def _down(depth: int, item: int) -> None:
    if depth <= 0:
        try:
            int(f"item {item}")
        except ValueError as exc:
            raise LookupError(f"item {item}: nothing down here") from exc
    _up(depth - 1, item)


def _up(depth: int, item: int) -> None:
    _down(depth - 1, item)


class BadReduce(DeepFailure):
    """Its chunks store their partials; its reduce raises: the run fails naming why."""

    name = "tests.bad_reduce"

    def reduce(self, partials: list[Partial]) -> dict[str, Any]:
        raise ArithmeticError(f"cannot add up {len(partials)} partials")
