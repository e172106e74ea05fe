"""Schedules: validated, stored in SQL with an audit trail, written through to RedBeat."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from celery import Celery
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batch import beat
from batch.constants import QUEUES
from batch.core import Core
from batch.cron import MAX_INTERVAL_SECONDS, make_schedule
from batch.db import utcnow
from batch.exceptions import Conflict, InvalidParams, InvalidSchedule, NotFound, UnknownJob
from batch.models import AuditEntry, Run, Schedule

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
#: Names the admin's URLs use under /schedules/.
RESERVED_NAMES = frozenset({"new", "preview"})
AUDITED_FIELDS = (
    "job",
    "params",
    "cron",
    "timezone",
    "interval_seconds",
    "enabled",
    "overlap",
    "queue",
    "priority",
    "deadline_seconds",
    "description",
)


class ScheduleSpec(BaseModel):
    """A schedule as given by a person or a program (TOML file, API, admin form)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    job: str
    params: dict[str, Any] = Field(default_factory=dict)
    cron: str | None = None
    timezone: str = "UTC"
    interval_seconds: int | None = None
    enabled: bool = True
    overlap: Literal["allow", "skip"] = "allow"
    queue: Literal[QUEUES] | None = None  # type: ignore[valid-type]
    priority: int | None = Field(default=None, ge=0, le=9)
    deadline_seconds: int | None = Field(default=None, ge=1, le=MAX_INTERVAL_SECONDS)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is reserved: choose another name")
        return name


def validate_schedule(core: Core, data: Mapping[str, Any]) -> ScheduleSpec:
    """Check everything about a schedule before it is stored; raises InvalidSchedule.

    Every problem is reported at once: fields, the job and its params, and the timing.
    """
    raw = dict(data)
    errors: dict[str, str] = {}
    spec: ScheduleSpec | None = None
    try:
        spec = ScheduleSpec.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            errors.setdefault(".".join(map(str, error["loc"])) or "schedule", error["msg"])
    given = _check_job_and_params(core, raw, errors)
    _check_timing(spec, raw, errors)
    if errors or spec is None:
        raise InvalidSchedule(errors)
    # Keep only the params given (coerced): time-relative defaults resolve at each fire.
    return spec.model_copy(update={"params": given})


def _check_job_and_params(
    core: Core, raw: dict[str, Any], errors: dict[str, str]
) -> dict[str, Any]:
    job_name, params = raw.get("job"), raw.get("params", {})
    if not isinstance(job_name, str) or "job" in errors:
        return {}
    try:
        job = core.jobs.get(job_name)
    except UnknownJob as exc:
        errors["job"] = str(exc)
        return {}
    if not isinstance(params, Mapping):
        return {}
    try:
        validated = job.validate_params(params, now=utcnow())
    except InvalidParams as exc:
        for key, message in exc.body_errors().items():
            errors.setdefault(key, message)
        return {}
    return validated.model_dump(mode="json", include=validated.model_fields_set)


def _check_timing(spec: ScheduleSpec | None, raw: dict[str, Any], errors: dict[str, str]) -> None:
    if spec is not None:
        cron, timezone, interval = spec.cron, spec.timezone, spec.interval_seconds
    else:
        cron, timezone, interval = (raw.get(f) for f in ("cron", "timezone", "interval_seconds"))
        timezone = "UTC" if timezone is None else timezone
        types_ok = (
            isinstance(cron, str | None)
            and isinstance(timezone, str)
            and (interval is None or type(interval) is int)
        )
        if not types_ok or {"cron", "timezone", "interval_seconds"} & errors.keys():
            return
    try:
        make_schedule(cron=cron, timezone=timezone, interval_seconds=interval)
    except InvalidSchedule as exc:
        for key, message in exc.errors.items():
            errors.setdefault(key, message)


def snapshot(row: Schedule) -> dict[str, Any]:
    """The audited fields of a schedule row, as JSON."""
    return {field: getattr(row, field) for field in AUDITED_FIELDS}


def _audit(session: Session, actor: str, action: str, name: str, before: Any, after: Any) -> None:
    session.add(
        AuditEntry(
            actor=actor,
            action=action,
            object_type="schedule",
            object_name=name,
            before=before,
            after=after,
        )
    )


def get_schedule(session: Session, name: str) -> Schedule:
    """The schedule called ``name``, or NotFound."""
    row = session.get(Schedule, name)
    if row is None:
        raise NotFound(f"schedule {name!r} not found")
    return row


def save_schedule(
    core: Core,
    celery: Celery,
    spec: ScheduleSpec,
    *,
    actor: str,
    mode: Literal["create", "update", "upsert"] = "upsert",
) -> Schedule:
    """Store a validated schedule, audit the change and write it through to RedBeat."""
    values = spec.model_dump(exclude={"name"})
    with beat.schedule_lock(celery), core.transaction() as session:
        row = session.get(Schedule, spec.name)
        if row is not None and mode == "create":
            raise Conflict(f"schedule {spec.name!r} already exists")
        if row is None and mode == "update":
            raise NotFound(f"schedule {spec.name!r} not found")
        before = snapshot(row) if row is not None else None
        if row is None:
            row = Schedule(name=spec.name, **values)
            session.add(row)
        else:
            for field, value in values.items():
                setattr(row, field, value)
        after = snapshot(row)
        if before != after:
            if before is not None:
                row.updated_at = utcnow()
            _audit(
                session, actor, "create" if before is None else "update", spec.name, before, after
            )
        beat.write_entry(celery, row)
    return row


def set_enabled(core: Core, celery: Celery, name: str, enabled: bool, *, actor: str) -> Schedule:
    """Enable or disable a schedule (disabled ones are removed from RedBeat)."""
    with beat.schedule_lock(celery), core.transaction() as session:
        row = get_schedule(session, name)
        if row.enabled != enabled:
            before = snapshot(row)
            row.enabled, row.updated_at = enabled, utcnow()
            _audit(session, actor, "enable" if enabled else "disable", name, before, snapshot(row))
        beat.write_entry(celery, row)
    return row


def remove_schedule(core: Core, celery: Celery, name: str, *, actor: str) -> None:
    """Delete a schedule from SQL and RedBeat."""
    with beat.schedule_lock(celery), core.transaction() as session:
        row = get_schedule(session, name)
        _audit(session, actor, "delete", name, snapshot(row), None)
        session.delete(row)
        beat.delete_entry(celery, name)


def list_schedules(session: Session) -> list[Schedule]:
    """All schedules by name."""
    return list(session.scalars(select(Schedule).order_by(Schedule.name)))


def schedule_as_dict(row: Schedule) -> dict[str, Any]:
    """The JSON view of a schedule (the API's and the forms' shape: ScheduleSpec's fields)."""
    return {"name": row.name, **snapshot(row)}


def audit_trail(session: Session, name: str, limit: int = 50) -> list[AuditEntry]:
    """The newest audit entries of schedule ``name``, newest first."""
    return list(
        session.scalars(
            select(AuditEntry)
            .where(AuditEntry.object_type == "schedule", AuditEntry.object_name == name)
            .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
            .limit(limit)
        )
    )


def last_runs(session: Session, names: list[str]) -> dict[str, Run]:
    """The newest run of each named schedule (one indexed query)."""
    newest = (
        select(Run.schedule_name, func.max(Run.created_at).label("created_at"))
        .where(Run.schedule_name.in_(names))
        .group_by(Run.schedule_name)
        .subquery()
    )
    rows = session.scalars(
        select(Run).join(
            newest,
            (Run.schedule_name == newest.c.schedule_name) & (Run.created_at == newest.c.created_at),
        )
    )
    return {run.schedule_name: run for run in rows}


def load_schedule_files(core: Core, path: Path) -> list[ScheduleSpec]:
    """Parse and validate ``path`` (a .toml file or a folder of them); all or nothing."""
    if not path.exists():
        raise InvalidSchedule({"path": f"{path} does not exist"})
    files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
    specs = []
    for file in files:
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidSchedule({str(file): f"not valid TOML: {exc}"}) from None
        data.setdefault("name", file.stem)
        try:
            specs.append(validate_schedule(core, data))
        except InvalidSchedule as exc:
            raise InvalidSchedule({f"{file.name}: {k}": v for k, v in exc.errors.items()}) from None
    return specs


def import_schedules(core: Core, celery: Celery, path: Path, *, actor: str) -> list[Schedule]:
    """Create or update every schedule in ``path`` after validating all of them."""
    return [
        save_schedule(core, celery, spec, actor=actor) for spec in load_schedule_files(core, path)
    ]
