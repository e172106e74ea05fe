"""The job extension point: a params schema, ``plan``, ``process`` and ``reduce``.

Adding a job is one new module in this package defining a :class:`Job` subclass; modules
named in ``BATCH_JOB_MODULES`` are loaded too.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.orm import Session

from batch.constants import DEFAULT_QUEUES
from batch.exceptions import InvalidParams, UnknownJob
from batch.jobs.views import ResultView
from batch.messages import field_messages

Spec = dict[str, Any]
Partial = dict[str, Any]


class Params(BaseModel):
    """Base class of every job's params schema: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Job:
    """A registered batch job. Subclasses set the class attributes and the three methods."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: The queue its runs go to, one of BATCH_QUEUES; left empty, the registry sets the
    #: configured default queue (the first of BATCH_QUEUES).
    queue: str = ""
    params_model: ClassVar[type[Params]] = Params
    #: Seconds a chunk may run before SoftTimeLimitExceeded, then before it is killed.
    soft_time_limit: ClassVar[int] = 300
    time_limit: ClassVar[int] = 360
    #: Fewer items than this in a chunk cost more in messages than they gain in parallelism.
    min_chunk_items: ClassVar[int] = 1
    #: True when ``process`` writes: it then runs in the transaction that stores its
    #: partial, under a lock on the chunk row, so a repeat delivery writes nothing twice.
    writes: ClassVar[bool] = False
    #: How the admin shows its results (batch.jobs.views); None: the numbers at the top of
    #: its results, by key.
    result_view: ClassVar[ResultView | None] = None

    def validate_params(self, raw: Mapping[str, Any], *, now: datetime) -> Params:
        """Validate ``raw`` against the schema; ``now`` resolves time-relative defaults."""
        try:
            return self.params_model.model_validate(dict(raw), context={"now": now})
        except ValidationError as exc:
            raise InvalidParams(self.name, field_messages(exc, whole="params")) from None
        except OverflowError as exc:
            # Date arithmetic in a job's validator past the years 1 or 9999: such params
            # could never run, so they are refused like any other bad value.
            raise InvalidParams(self.name, {"params": f"out of range: {exc}"}) from None

    def plan(self, params: Any, *, chunks: int, db: Session) -> list[Spec]:
        """Split the work into at most about ``chunks`` small JSON chunk specs."""
        raise NotImplementedError

    def process(self, spec: Spec, params: Any, *, db: Session) -> Partial:
        """Compute one chunk's JSON partial (in a read-only session unless ``writes``)."""
        raise NotImplementedError

    def reduce(self, partials: list[Partial]) -> dict[str, Any]:
        """Combine all partials (in chunk order) into the run's result."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Name, description, queue and params JSON schema, for listings."""
        return {
            "name": self.name,
            "description": self.description,
            "queue": self.queue,
            "params": self.params_model.model_json_schema(),
        }


def split_range(first: int, last: int, parts: int, *, min_size: int = 1) -> list[tuple[int, int]]:
    """Split the inclusive range ``first..last`` into at most ``parts`` near-equal ranges."""
    total = last - first + 1
    if total <= 0:
        return []
    parts = max(1, min(parts, total // max(min_size, 1) or 1))
    size, extra = divmod(total, parts)
    ranges = []
    start = first
    for index in range(parts):
        end = start + size + (1 if index < extra else 0) - 1
        ranges.append((start, end))
        start = end + 1
    return ranges


def _job_classes(module: Any) -> Iterator[type[Job]]:
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, Job)
            and value is not Job
            and "name" in vars(value)
            and value.__module__ == module.__name__
        ):
            yield value


class JobRegistry:
    """Jobs by name, loaded from this package and from extra modules.

    Every job's queue must be one of ``queues`` (BATCH_QUEUES); a job that declares no queue
    gets the first of them.
    """

    def __init__(
        self, extra_modules: Iterable[str] = (), *, queues: Sequence[str] = DEFAULT_QUEUES
    ) -> None:
        self._jobs: dict[str, Job] = {}
        self._queues = tuple(queues)
        names = [f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__)]
        for module_name in [*names, *extra_modules]:
            for job_class in _job_classes(importlib.import_module(module_name)):
                self._add(job_class())

    def _add(self, job: Job) -> None:
        # A wrong declaration fails at start-up, not when the first run is planned.
        if job.name in self._jobs:
            raise ValueError(f"job {job.name!r} is declared twice")
        if not job.queue:
            job.queue = self._queues[0]
        if job.queue not in self._queues:
            raise ValueError(
                f"job {job.name!r} is declared on queue {job.queue!r}, which is not configured:"
                f" add it to BATCH_QUEUES (now {','.join(self._queues)})"
            )
        self._jobs[job.name] = job

    def get(self, name: str) -> Job:
        """The job registered as ``name``, or :class:`UnknownJob`."""
        try:
            return self._jobs[name]
        except KeyError:
            raise UnknownJob(name) from None

    def __iter__(self) -> Iterator[Job]:
        return iter(sorted(self._jobs.values(), key=lambda job: job.name))

    def __contains__(self, name: object) -> bool:
        return name in self._jobs
