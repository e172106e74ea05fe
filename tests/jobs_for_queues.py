"""Jobs on queues that only tests/test_queues.py configures (loaded through BATCH_JOB_MODULES)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy.orm import Session

from batch.jobs import Job, Params, Partial, Spec, split_range

TEAM_QUEUE = "team-a"


class CubeParams(Params):
    n: int = Field(default=1000, ge=0)


class SumCubes(Job):
    """Sum of i**3 for i in 0..n-1, chunked; it declares no queue."""

    name = "tests.sum_cubes"
    params_model = CubeParams

    def plan(self, params: CubeParams, *, chunks: int, db: Session) -> list[Spec]:
        return [{"first": lo, "last": hi} for lo, hi in split_range(0, params.n - 1, chunks)]

    def process(self, spec: Spec, params: CubeParams, *, db: Session) -> Partial:
        return {"sum": sum(i**3 for i in range(spec["first"], spec["last"] + 1))}

    def reduce(self, partials: list[Partial]) -> dict[str, Any]:
        return {"sum": sum(partial["sum"] for partial in partials)}


class SumCubesForTeamA(SumCubes):
    """The same job declared on the `team-a` queue."""

    name = "tests.sum_cubes_team_a"
    queue = TEAM_QUEUE
