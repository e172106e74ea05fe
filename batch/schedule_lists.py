"""Reads that find and list schedules: the filters the admin's list, the API and the CLI
share, and a page of schedules with each one's newest run.

Each shape of filter (which fields it sets) has its statements built once and run with the
filter's values as parameters: building a statement and its cache key cost more than
running it on a page of 50 schedules.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Row, Select, bindparam, func, select
from sqlalchemy.orm import Session

from batch.jobs import JobRegistry
from batch.models import Run, Schedule

#: The columns of a schedule that a list of schedules shows.
LIST_COLUMNS = (
    Schedule.name,
    Schedule.job,
    Schedule.enabled,
    Schedule.cron,
    Schedule.timezone,
    Schedule.interval_seconds,
    Schedule.description,
    Schedule.source,
)
#: The escape character of a searched text in LIKE (SQLAlchemy's autoescape uses the same).
LIKE_ESCAPE = "/"


class FilterShape(NamedTuple):
    """Which conditions a filter has: its statements are the same for every value."""

    dialect: str
    search: bool
    job: bool
    #: For a queue filter, the jobs whose runs go to that queue by default.
    default_jobs: tuple[str, ...] | None
    enabled: bool | None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions, with the values as bound parameters (ScheduleFilter.params)."""
        conditions: list[ColumnElement[bool]] = []
        if self.search:
            # Names are ASCII (NAME_PATTERN), and SQLite's LIKE ignores the case of ASCII
            # letters: a plain LIKE there, twice as fast as lower() on every row.
            pattern = bindparam("search")
            if self.dialect == "sqlite":
                conditions.append(Schedule.name.like(pattern, escape=LIKE_ESCAPE))
            else:
                lowered = func.lower(Schedule.name)
                conditions.append(lowered.like(func.lower(pattern), escape=LIKE_ESCAPE))
        if self.job:
            conditions.append(Schedule.job == bindparam("job"))
        if self.default_jobs is not None:
            conditions.append(
                (Schedule.queue == bindparam("queue"))
                | (Schedule.queue.is_(None) & Schedule.job.in_(self.default_jobs))
            )
        if self.enabled is not None:
            conditions.append(Schedule.enabled.is_(self.enabled))
        return conditions


@dataclass(frozen=True)
class ScheduleFilter:
    """Which schedules a list or a bulk change means; a field left None does not filter."""

    #: A part of the name, in any case.
    search: str | None = None
    job: str | None = None
    #: The queue a schedule's runs go to: its own, else its job's.
    queue: str | None = None
    enabled: bool | None = None

    def __bool__(self) -> bool:
        return any(value is not None for value in vars(self).values())

    def shape(self, jobs: JobRegistry, session: Session) -> FilterShape:
        """The shape of this filter on ``session``'s database (indexed: ``ix_schedules_job``,
        ``ix_schedules_job_enabled``, ``_queue``)."""
        default_jobs = None
        if self.queue is not None:
            default_jobs = tuple(job.name for job in jobs if job.queue == self.queue)
        dialect = session.get_bind().dialect.name
        return FilterShape(
            dialect, bool(self.search), self.job is not None, default_jobs, self.enabled
        )

    def params(self) -> dict[str, Any]:
        """The values of the shape's bound parameters."""
        values: dict[str, Any] = {"job": self.job, "queue": self.queue}
        if self.search:
            values["search"] = f"%{_escape_like(self.search)}%"
        return values


def _escape_like(text: str) -> str:
    """``text`` matched literally by LIKE with LIKE_ESCAPE (``%`` and ``_`` are not wildcards)."""
    for special in (LIKE_ESCAPE, "%", "_"):
        text = text.replace(special, LIKE_ESCAPE + special)
    return text


def find_schedules(
    session: Session,
    jobs: JobRegistry,
    where: ScheduleFilter,
    *,
    limit: int,
    offset: int = 0,
    after: str | None = None,
) -> tuple[list[Any], int]:
    """One page of the schedules ``where`` matches, by name (those named after ``after``
    only, when given), and how many match in all."""
    shape = where.shape(jobs, session)
    params = {**where.params(), "limit": limit, "offset": offset, "after": after}
    rows = list(session.scalars(_find_statement(shape, after is not None), params))
    if after is not None:
        return rows, _count(session, shape, params)
    return rows, _matching(session, shape, params, rows)


def list_schedules(
    session: Session, jobs: JobRegistry, where: ScheduleFilter, *, limit: int, offset: int = 0
) -> tuple[list[Row[Any]], int]:
    """What a list shows of one page of the schedules ``where`` matches, by name: the
    LIST_COLUMNS and the newest run's ``last_run_id``, ``last_run_status`` and
    ``last_run_at`` (None when it never ran), in one query; and how many match in all."""
    shape = where.shape(jobs, session)
    params = {**where.params(), "limit": limit, "offset": offset}
    rows = list(session.execute(_list_statement(shape), params))
    return rows, _matching(session, shape, params, rows)


def names_matching(session: Session, jobs: JobRegistry, where: ScheduleFilter) -> list[str]:
    """The names of every schedule ``where`` matches, in order (for a bulk change)."""
    shape = where.shape(jobs, session)
    query = select(Schedule.name).where(*shape.conditions()).order_by(Schedule.name)
    return list(session.scalars(query, where.params()))


def _matching(
    session: Session, shape: FilterShape, params: dict[str, Any], page: Sequence[Any]
) -> int:
    """How many schedules match, given the page of them at ``params``' offset: a page that
    is not full and not past the end tells without counting."""
    limit, offset = params["limit"], params["offset"]
    if len(page) < limit and (page or offset == 0):
        return offset + len(page)
    return _count(session, shape, params)


def _count(session: Session, shape: FilterShape, params: dict[str, Any]) -> int:
    return session.scalar(_count_statement(shape), params) or 0


def _newest_run(name: ColumnElement[str]) -> Select[Any]:
    """The newest run of the schedule ``name`` (a column, for a correlated subquery): one
    step down ``ix_runs_schedule_created``."""
    return (
        select(Run.id, Run.status, Run.created_at)
        .where(Run.schedule_name == name)
        .order_by(Run.created_at.desc())
        .limit(1)
    )


@functools.lru_cache(maxsize=128)
def _find_statement(shape: FilterShape, after: bool) -> Select[Any]:
    query = select(Schedule).where(*shape.conditions())
    if after:
        query = query.where(Schedule.name > bindparam("after"))
    return _paged(query.order_by(Schedule.name))


@functools.lru_cache(maxsize=128)
def _list_statement(shape: FilterShape) -> Select[Any]:
    newest_run_id = _newest_run(Schedule.name).with_only_columns(Run.id).label("run_id")
    page = _paged(
        select(*LIST_COLUMNS, newest_run_id).where(*shape.conditions()).order_by(Schedule.name)
    ).subquery()
    return (
        select(
            *(page.c[column.key] for column in LIST_COLUMNS),
            Run.id.label("last_run_id"),
            Run.status.label("last_run_status"),
            Run.created_at.label("last_run_at"),
        )
        .outerjoin(Run, Run.id == page.c.run_id)
        .order_by(page.c.name)
    )


@functools.lru_cache(maxsize=128)
def _count_statement(shape: FilterShape) -> Select[Any]:
    return select(func.count()).select_from(Schedule).where(*shape.conditions())


def _paged(query: Select[Any]) -> Select[Any]:
    return query.limit(bindparam("limit")).offset(bindparam("offset"))
