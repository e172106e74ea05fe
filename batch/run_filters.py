"""Which runs a list means: the filters the admin's runs list, ``GET /api/runs`` and
``batch runs list`` share, read from query arguments or options, and their SQL conditions.

Every filter has an index to start from: an equality first (job, schedule, status, trigger
kind; job and status together) and the date range on ``created_at`` after it, or the id range
of an id prefix. Filters combined narrow the rows read from the most selective of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement

from batch.exceptions import InvalidFilter, UnknownJob, UserError
from batch.jobs import JobRegistry
from batch.models import RUN_STATES, TRIGGER_KINDS, Run

#: The query arguments (and CLI options) of a runs filter, in the order forms show them.
FILTER_ARGS = ("q", "job", "schedule", "status", "trigger", "since", "until")
#: The shortest run id prefix searched for; ids are lowercase UUIDs.
MIN_ID_PREFIX = 4
ID_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{3,35}")
#: A schedule name as stored (schedules.NAME_PATTERN).
SCHEDULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")
#: Above every character of a run id: the end of an id prefix's range.
ID_RANGE_END = "~"


@dataclass(frozen=True)
class RunFilter:
    """Runs by id prefix, job, schedule, status, trigger kind and creation time (``since``
    included, ``until`` excluded); a field left None does not filter."""

    id_prefix: str | None = None
    job: str | None = None
    schedule: str | None = None
    status: str | None = None
    trigger: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, field.name) is not None for field in fields(self))

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions of the fields that are set."""
        conditions: list[ColumnElement[bool]] = []
        if self.id_prefix is not None:
            conditions += [Run.id >= self.id_prefix, Run.id < self.id_prefix + ID_RANGE_END]
        if self.job is not None:
            conditions.append(Run.job == self.job)
        if self.schedule is not None:
            conditions.append(Run.schedule_name == self.schedule)
        if self.status is not None:
            conditions.append(Run.status == self.status)
        if self.trigger is not None:
            conditions.append(Run.trigger_kind == self.trigger)
        if self.since is not None:
            conditions.append(Run.created_at >= self.since)
        if self.until is not None:
            conditions.append(Run.created_at < self.until)
        return conditions


def parse_filter(args: Mapping[str, str], jobs: JobRegistry) -> RunFilter:
    """The RunFilter of query arguments ``q`` (an id prefix), ``job``, ``schedule``,
    ``status``, ``trigger``, ``since`` and ``until``; empty ones do not filter.
    InvalidFilter names every bad one."""
    value = {key: (args.get(key) or "").strip() or None for key in FILTER_ARGS}
    readers: dict[str, Callable[[str | None], Any]] = {
        "q": _id_prefix,
        "job": lambda text: _job(text, jobs),
        "schedule": _schedule,
        "status": lambda text: _choice("status", text, RUN_STATES),
        "trigger": lambda text: _choice("trigger", text, TRIGGER_KINDS),
        "since": lambda text: parse_moment("since", text, end_of_day=False),
        "until": lambda text: parse_moment("until", text, end_of_day=True),
    }
    read: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, reader in readers.items():
        try:
            read[key] = reader(value[key])
        except UserError as exc:
            errors[key] = str(exc)
    since, until = read.get("since"), read.get("until")
    if since is not None and until is not None and since >= until:
        errors["until"] = "since must be earlier than until"
    if errors:
        raise InvalidFilter(errors)
    return RunFilter(
        id_prefix=read["q"],
        job=read["job"],
        schedule=read["schedule"],
        status=read["status"],
        trigger=read["trigger"],
        since=since,
        until=until,
    )


def filter_args(where: RunFilter) -> dict[str, str]:
    """The query arguments that give ``where`` back (for links, forms and ``next`` URLs)."""
    values = {
        "q": where.id_prefix,
        "job": where.job,
        "schedule": where.schedule,
        "status": where.status,
        "trigger": where.trigger,
        "since": _show_moment(where.since, end_of_day=False),
        "until": _show_moment(where.until, end_of_day=True),
    }
    return {key: text for key, text in values.items() if text is not None}


def _id_prefix(text: str | None) -> str | None:
    if text is None:
        return None
    prefix = text.lower()
    if not ID_PREFIX.fullmatch(prefix):
        raise UserError(
            f"bad run id {text!r}: expected at least {MIN_ID_PREFIX} of its first characters"
            " (0-9, a-f and -)"
        )
    return prefix


def _job(text: str | None, jobs: JobRegistry) -> str | None:
    # A filter naming no job is a bad query (400), not a missing resource (the API's 404).
    try:
        return jobs.get(text).name if text is not None else None
    except UnknownJob as exc:
        raise UserError(str(exc)) from None


def _schedule(text: str | None) -> str | None:
    if text is not None and not SCHEDULE_NAME.fullmatch(text):
        raise UserError(f"bad schedule {text!r}: not a schedule name")
    return text


def _choice(name: str, text: str | None, allowed: tuple[str, ...]) -> str | None:
    if text is not None and text not in allowed:
        raise UserError(f"unknown {name} {text!r}: expected one of {', '.join(allowed)}")
    return text


def parse_moment(name: str, text: str | None, *, end_of_day: bool) -> datetime | None:
    """A date (``2026-12-01``) or an ISO date and time, in UTC unless it names its zone. A
    date alone means its first moment; as an end (``until``), the end of that day."""
    if text is None:
        return None
    example = "expected a date (2026-12-01) or a date and time (2026-12-01T06:00)"
    try:
        if len(text) == len("2026-12-01"):
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(), UTC) + timedelta(days=1 if end_of_day else 0)
        else:
            moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise UserError(f"bad {name} {text!r}: {example}") from None


def _show_moment(moment: datetime | None, *, end_of_day: bool) -> str | None:
    """``moment`` as ``parse_moment`` reads it back: a midnight as a date (as an end, the date of
    the day it ends), else the UTC date and time."""
    if moment is None:
        return None
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    if naive.time() == time():
        return (naive.date() - timedelta(days=1 if end_of_day else 0)).isoformat()
    return naive.isoformat(timespec="auto" if naive.second or naive.microsecond else "minutes")
