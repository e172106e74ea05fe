"""Schedules: validated, stored in SQL with an audit trail, written through to RedBeat."""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, NamedTuple

from celery import Celery
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from batch import entries, simple_toml, storable
from batch.core import Core
from batch.cron import MAX_INTERVAL_SECONDS, make_schedule
from batch.db import utcnow
from batch.exceptions import Conflict, InvalidParams, InvalidSchedule, NotFound, UnknownJob
from batch.messages import field_messages
from batch.models import AuditEntry, Schedule
from batch.reconcile import record_changes

log = logging.getLogger(__name__)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "use 1 to 200 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
#: The ``schedules.cron`` column's size; a real cron line is far shorter.
MAX_CRON_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
#: The longest streak of failures ``alert_after_failures`` may wait for.
MAX_FAILURE_STREAK = 1000
#: The longest catch-up window (31 days), and the most missed fires one catch-up runs.
MAX_CATCH_UP_WINDOW = 31 * 86400
MAX_CATCH_UP_FIRES = 1000
#: Who the audit log names for a schedule that paused itself.
PAUSE_ACTOR = "batch"
#: Names the admin's URLs use under /schedules/.
RESERVED_NAMES = frozenset({"new", "preview"})
#: The stored fields of a ScheduleSpec (its name aside): the API's, the forms' and the files'.
SPEC_FIELDS = (
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
    "must_start_within_seconds",
    "must_succeed_within_seconds",
    "alert_after_failures",
    "pause_after_failures",
    "catch_up",
    "catch_up_window_seconds",
    "catch_up_max",
    "description",
)
#: What the audit log records: the spec fields and the file a schedule was imported from.
AUDITED_FIELDS = (*SPEC_FIELDS, "source")
#: What storing a spec did (or, for ``diff_schedules``, would do) to one schedule.
ChangeAction = Literal["created", "updated", "unchanged", "kept"]
#: How a spec is stored: as a new schedule, over an existing one, or either.
StoreMode = Literal["create", "update", "upsert"]
#: Schedules fetched per SQL query by name (a bound on the query's parameters).
READ_BATCH = 1000
#: Names a log line shows before "and N more".
LOGGED_NAMES = 20
PLANNED = {"created": "would create", "updated": "would update"}
#: Params checked per (job, repr of the params): the stored params, or the errors by field.
ParamsMemo = dict[tuple[str, str], tuple[dict[str, Any], dict[str, str]]]


class ScheduleSpec(BaseModel):
    """A schedule as given by a person or a program (TOML file, API, admin form)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    job: str
    params: dict[str, Any] = Field(default_factory=dict)
    #: Stored with its fields separated by single spaces (``*/5  * * * *`` is ``*/5 * * * *``).
    cron: str | None = Field(default=None, max_length=MAX_CRON_LENGTH)
    timezone: str = "UTC"
    interval_seconds: int | None = None
    enabled: bool = True
    #: While a run of it is going, a fire: starts anyway, is skipped, waits (one at most) or
    #: cancels the run going.
    overlap: Literal["allow", "skip", "buffer_one", "cancel_other"] = "allow"
    #: One of BATCH_QUEUES: validate_schedule passes them as the context's "queues".
    queue: str | None = None
    priority: int | None = Field(default=None, ge=0, le=9)
    #: Skip a fire whose run would start later than this after its fire time.
    deadline_seconds: int | None = Field(default=None, ge=1, le=MAX_INTERVAL_SECONDS)
    #: Alert when a fire's run has not started this long after its fire time.
    must_start_within_seconds: int | None = Field(default=None, ge=1, le=MAX_INTERVAL_SECONDS)
    #: Alert when a fire's run has not succeeded this long after its fire time.
    must_succeed_within_seconds: int | None = Field(default=None, ge=1, le=MAX_INTERVAL_SECONDS)
    #: Alert when this many runs in a row have failed (1: at each failure).
    alert_after_failures: int = Field(default=1, ge=1, le=MAX_FAILURE_STREAK)
    #: Disable the schedule when this many runs in a row have failed (None: never).
    pause_after_failures: int | None = Field(default=None, ge=1, le=MAX_FAILURE_STREAK)
    #: Fires missed while beat was down: skip them, run the newest (as beat does), or each.
    catch_up: Literal["skip", "latest", "each"] = "latest"
    #: With ``each``: how far back, and how many of the newest missed fires at most.
    catch_up_window_seconds: int = Field(default=86400, ge=60, le=MAX_CATCH_UP_WINDOW)
    catch_up_max: int = Field(default=10, ge=1, le=MAX_CATCH_UP_FIRES)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)

    @field_validator("cron", mode="before")
    @classmethod
    def _normalised_cron(cls, cron: Any) -> Any:
        return " ".join(cron.split()) if isinstance(cron, str) else cron

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is reserved: choose another name")
        return name

    @field_validator("queue")
    @classmethod
    def _configured_queue(cls, queue: str | None, info: ValidationInfo) -> str | None:
        queues = (info.context or {}).get("queues")
        if queue is not None and queues is not None and queue not in queues:
            # Worded as pydantic words a Literal, as the fixed queues once were.
            *others, last = map(repr, queues)
            expected = f"{', '.join(others)} or {last}" if others else last
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": expected}
            )
        return queue


def validate_schedule(
    core: Core, data: Mapping[str, Any], *, checked: ParamsMemo | None = None
) -> ScheduleSpec:
    """Check everything about a schedule before it is stored; raises InvalidSchedule.

    Every problem is reported at once: fields, the job and its params, and the timing.
    ``checked`` (one dict shared by a batch of specs) remembers each job's params as checked
    once, against the batch's first ``now``, so that 10,000 files with the same params are
    validated once.
    """
    raw = dict(data)
    errors: dict[str, str] = {
        key: problem
        for key, value in raw.items()
        if isinstance(key, str) and (problem := storable.value_problem(value))
    }
    spec: ScheduleSpec | None = None
    try:
        spec = ScheduleSpec.model_validate(raw, context={"queues": core.settings.queues})
    except ValidationError as exc:
        found = field_messages(exc, whole="schedule", patterns={NAME_PATTERN: NAME_RULE})
        for key, message in found.items():
            errors.setdefault(key, message)
    given = _check_job_and_params(core, raw, errors, {} if checked is None else checked)
    _check_timing(spec, raw, errors)
    if errors or spec is None:
        raise InvalidSchedule(errors)
    # Keep only the params given (coerced): time-relative defaults resolve at each fire.
    spec.params = given
    return spec


def _check_job_and_params(
    core: Core, raw: dict[str, Any], errors: dict[str, str], checked: ParamsMemo
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
    key = (job_name, repr(params))
    if key not in checked:
        try:
            validated = job.validate_params(params, now=utcnow())
            stored = validated.model_dump(mode="json", include=validated.model_fields_set)
            checked[key] = (stored, {})
        except InvalidParams as exc:
            checked[key] = ({}, exc.body_errors())
    stored, problems = checked[key]
    for field_name, message in problems.items():
        errors.setdefault(field_name, message)
    return dict(stored)


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
    for key, message in _timing_problems(cron, timezone, interval):
        errors.setdefault(key, message)


@functools.lru_cache(maxsize=4096)
def _timing_problems(
    cron: str | None, timezone: str, interval: int | None
) -> tuple[tuple[str, str], ...]:
    """What is wrong with a timing (a line, its zone, an interval); the same for every spec."""
    try:
        make_schedule(cron=cron, timezone=timezone, interval_seconds=interval)
    except InvalidSchedule as exc:
        return tuple(exc.errors.items())
    return ()


def snapshot(row: Schedule) -> dict[str, Any]:
    """The audited fields of a schedule row, as JSON."""
    return {name: getattr(row, name) for name in AUDITED_FIELDS}


@dataclass(frozen=True)
class ScheduleChange:
    """What storing a spec did to one schedule, field by field.

    ``fields`` maps each changed field to ``(before, after)``. For ``kept`` (it existed and was
    left alone) it says how the spec differs from it, as ``diff_schedules`` does (no ``source``).
    """

    name: str
    action: ChangeAction
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self, *, planned: bool = False) -> str:
        """One line for people: ``updated hourly: enabled: false -> true``.

        ``planned`` words it as what would happen: ``would update hourly: ...``.
        """
        verb = PLANNED.get(self.action, self.action) if planned else self.action
        if self.action == "created" or not self.fields:
            return f"{verb} {self.name}"
        changes = "; ".join(
            f"{name}: {_show(before)} -> {_show(after)}"
            for name, (before, after) in self.fields.items()
        )
        if self.action == "kept":
            return f"kept {self.name} (its file would change {changes})"
        return f"{verb} {self.name}: {changes}"


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def compare(
    spec: ScheduleSpec, row: Schedule | None, *, source: str | None = None
) -> ScheduleChange:
    """What storing ``spec`` (from the file ``source``, if given) would change in ``row``."""
    wanted = spec.model_dump(exclude={"name"})
    if source is not None:
        wanted["source"] = source
    if row is None:
        return ScheduleChange(spec.name, "created", {k: (None, v) for k, v in wanted.items()})
    fields = {k: (getattr(row, k), v) for k, v in wanted.items() if getattr(row, k) != v}
    return ScheduleChange(spec.name, "updated" if fields else "unchanged", fields)


def _audit_row(
    actor: str, action: str, name: str, before: Any, after: Any, *, at: datetime | None = None
) -> dict[str, Any]:
    """An audit entry's columns (``at`` left to its default unless given)."""
    row = {
        "actor": actor,
        "action": action,
        "object_type": "schedule",
        "object_name": name,
        "before": before,
        "after": after,
    }
    return row if at is None else {**row, "at": at}


def _audit(session: Session, actor: str, action: str, name: str, before: Any, after: Any) -> None:
    session.add(AuditEntry(**_audit_row(actor, action, name, before, after)))


def get_schedule(session: Session, name: str) -> Schedule:
    """The schedule called ``name``, or NotFound."""
    if not NAME_RE.fullmatch(name):
        # No schedule has such a name (PostgreSQL would refuse a NUL in it outright).
        raise NotFound(f"schedule {name!r} not found")
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
    """Store a validated schedule, audit the change and write it through to RedBeat.

    The row keeps its ``source``: an edit in the admin or the API does not detach it from
    its file.
    """
    return _store(core, celery, spec, actor=actor, mode=mode)[0]


def _store(
    core: Core,
    celery: Celery,
    spec: ScheduleSpec,
    *,
    actor: str,
    mode: StoreMode,
    source: str | None = None,
) -> tuple[Schedule, ScheduleChange]:
    with entries.schedule_lock(celery):
        with core.transaction() as session:
            row = session.get(Schedule, spec.name)
            if row is not None and mode == "create":
                raise Conflict(f"schedule {spec.name!r} already exists")
            if row is None and mode == "update":
                raise NotFound(f"schedule {spec.name!r} not found")
            change = compare(spec, row, source=source)
            before = snapshot(row) if row is not None else None
            if row is None:
                row = Schedule(name=spec.name)
                session.add(row)
            for name, (_, value) in change.fields.items():
                setattr(row, name, value)
            if change.fields:
                row.source_digest = None  # no longer what its file says, if it has one
                if before is not None:
                    row.updated_at = utcnow()
                if "enabled" in change.fields:
                    row.disabled_at = None if row.enabled else utcnow()
                action = "create" if before is None else "update"
                _audit(session, actor, action, spec.name, before, snapshot(row))
                record_changes(session, [spec.name])
        _follow_in_redbeat(celery, [row])
    return row, change


def set_enabled(core: Core, celery: Celery, name: str, enabled: bool, *, actor: str) -> Schedule:
    """Enable or disable a schedule (disabled ones are removed from RedBeat)."""
    return set_enabled_many(core, celery, [name], enabled, actor=actor).rows[0]


class EnabledResult(NamedTuple):
    """What ``set_enabled_many`` did: every named row as it is now, and the names it changed."""

    rows: list[Schedule]
    changed: list[str]


def set_enabled_many(
    core: Core, celery: Celery, names: Sequence[str], enabled: bool, *, actor: str
) -> EnabledResult:
    """Enable or disable the named schedules in one transaction; NotFound changes nothing.

    Each schedule that changes gets an audit entry and a change note; then every named
    schedule is written through to RedBeat (disabled ones are removed), pipelined.
    """
    wanted = list(dict.fromkeys(names))
    with entries.schedule_lock(celery):
        with core.transaction() as session:
            rows = _schedules_named(session, wanted)
            changed = [row for row in rows if row.enabled != enabled]
            action, now, audits = ("enable" if enabled else "disable"), utcnow(), []
            for row in changed:
                before = snapshot(row)
                row.enabled, row.updated_at, row.source_digest = enabled, now, None
                row.paused_reason = None  # enabled again, or disabled by a person
                row.disabled_at = None if enabled else now
                audits.append(_audit_row(actor, action, row.name, before, snapshot(row), at=now))
            if changed:
                session.execute(AuditEntry.__table__.insert(), audits)
                record_changes(session, [row.name for row in changed])
        _follow_in_redbeat(celery, rows)
    return EnabledResult(rows, [row.name for row in changed])


def _schedules_named(session: Session, names: list[str]) -> list[Schedule]:
    """The named schedules in the order given; NotFound names those that do not exist."""
    found: dict[str, Schedule] = {}
    valid = [name for name in names if NAME_RE.fullmatch(name)]
    for start in range(0, len(valid), READ_BATCH):
        part = select(Schedule).where(Schedule.name.in_(valid[start : start + READ_BATCH]))
        found.update((row.name, row) for row in session.scalars(part))
    missing = [name for name in names if name not in found]
    if missing:
        shown = ", ".join(map(repr, missing[:LOGGED_NAMES]))
        more = f" and {len(missing) - LOGGED_NAMES} more" if len(missing) > LOGGED_NAMES else ""
        raise NotFound(f"schedule {shown}{more} not found")
    return [found[name] for name in names]


def pause_schedule(session: Session, name: str, reason: str) -> bool:
    """In the caller's transaction: disable schedule ``name`` for ``reason`` (audited as
    ``pause`` by ``batch``); whether it was enabled. Reconcile removes its RedBeat entry
    within BATCH_RECONCILE_INTERVAL_SECONDS, and a fire sent meanwhile is skipped."""
    row = session.get(Schedule, name)
    if row is None or not row.enabled:
        return False
    before = snapshot(row)
    row.enabled, row.updated_at, row.source_digest = False, utcnow(), None
    row.paused_reason, row.disabled_at = reason, row.updated_at
    _audit(session, PAUSE_ACTOR, "pause", name, before, snapshot(row))
    record_changes(session, [name])
    return True


def remove_schedule(core: Core, celery: Celery, name: str, *, actor: str) -> None:
    """Delete a schedule from SQL and RedBeat."""
    with entries.schedule_lock(celery):
        with core.transaction() as session:
            row = get_schedule(session, name)
            _audit(session, actor, "delete", name, snapshot(row), None)
            record_changes(session, [name])
            session.delete(row)
        _follow_in_redbeat(celery, [row], deleted=True)


def _follow_in_redbeat(celery: Celery, rows: Sequence[Schedule], *, deleted: bool = False) -> None:
    # Called after the SQL commit, under the schedule lock: RedBeat only ever follows a
    # committed state, so an edit refused at its commit leaves beat's entries untouched.
    # If Redis fails here, SQL stays the truth and reconcile writes the entries on its pass.
    try:
        if deleted:
            entries.delete_entries(celery, [row.name for row in rows])
        else:
            entries.write_entries(celery, rows)
    except entries.REDIS_ERRORS as exc:
        names = ", ".join(row.name for row in rows[:LOGGED_NAMES])
        more = f" and {len(rows) - LOGGED_NAMES} more" if len(rows) > LOGGED_NAMES else ""
        log.warning(
            "schedule %s%s saved; RedBeat not updated (%s): reconcile writes it within %ss",
            names, more, exc, celery.batch_core.settings.reconcile_interval_seconds,
        )  # fmt: skip


def schedule_as_dict(row: Schedule) -> dict[str, Any]:
    """The JSON view of a schedule (the API's and the forms' shape: ScheduleSpec's fields)."""
    return {"name": row.name, **{name: getattr(row, name) for name in SPEC_FIELDS}}


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


class ScheduleFile(NamedTuple):
    """A schedule file: the path as given (``schedules/x.toml``), the schedule's name, its
    validated spec (None when the file was skipped as unchanged) and the file's digest."""

    source: str
    spec: ScheduleSpec | None
    name: str
    digest: str


#: A schedule file's last import: source -> (schedule name, digest), for the rows that still
#: match their file.
ImportedDigests = Mapping[str, tuple[str, str]]


def load_schedule_files(
    core: Core, path: Path, *, imported: ImportedDigests | None = None
) -> list[ScheduleFile]:
    """Parse and validate ``path`` (a .toml file or a folder of them); all or nothing.

    A file whose digest is the one ``imported`` holds for its path is not parsed again: its
    row still matches it, and nothing it is validated against has changed since (see
    ``validation_fingerprint``). It comes back with ``spec`` None.
    """
    if not path.exists():
        raise InvalidSchedule({"path": f"{path} does not exist"})
    hashed_fingerprint = hashlib.sha256(validation_fingerprint(core))
    loaded: dict[str, ScheduleFile] = {}
    checked: ParamsMemo = {}
    for source, is_file in _toml_files(path):
        content = _read_file(source, is_file)
        hashed = hashed_fingerprint.copy()
        hashed.update(content)
        digest = hashed.hexdigest()
        last = (imported or {}).get(source)
        if last is not None and last[1] == digest:
            name, spec = last[0], None
        else:
            spec = _parse(core, Path(source), _decode(source, content), checked)
            name = spec.name
        if name in loaded:
            file_name, other = os.path.basename(source), loaded[name].source
            raise InvalidSchedule({f"{file_name}: name": f"{name!r} is also in {other}"})
        loaded[name] = ScheduleFile(source, spec, name, digest)
    return list(loaded.values())


def validation_fingerprint(core: Core) -> bytes:
    """What validating a schedule file depends on besides its text: batch's version, the
    configured queues, and each job's name, queue and params schema. A change to any of
    them makes every file's digest change, so the next import validates every file again."""
    jobs = [(job.name, job.queue, job.params_model.model_json_schema()) for job in core.jobs]
    described = [metadata.version("batch"), list(core.settings.queues), jobs]
    return json.dumps(described, sort_keys=True, default=str).encode() + b"\x00"


def _parse(core: Core, file: Path, text: str, checked: ParamsMemo) -> ScheduleSpec:
    try:
        data = simple_toml.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSchedule({str(file): f"not valid TOML: {exc}"}) from None
    data.setdefault("name", file.stem)
    try:
        return validate_schedule(core, data, checked=checked)
    except InvalidSchedule as exc:
        raise InvalidSchedule({f"{file.name}: {k}": v for k, v in exc.errors.items()}) from None


def _toml_files(path: Path) -> list[tuple[str, bool]]:
    """``path``, or the .toml files in it by name, as POSIX paths (a file's ``source``); each
    with whether it is a regular file (read from the folder's listing: no ``stat`` per
    file). Strings, not Paths: at 10,000 files, Path objects cost a fifth of a re-import."""
    if not path.is_dir():
        return [(path.as_posix(), path.is_file())]
    with os.scandir(path) as listing:
        found = [
            (entry.name, entry.path, entry.is_file())
            for entry in listing
            if entry.name.endswith(".toml")
        ]
    return [(source, is_file) for _, source, is_file in sorted(found)]


def _read_file(source: str, is_file: bool) -> bytes:
    if not is_file:  # a folder, or a pipe that a read would wait on
        raise InvalidSchedule({source: "not a file"})
    try:
        # Unbuffered: one read of a small file, without a buffer object per file.
        with open(source, "rb", buffering=0) as stream:
            return stream.readall()
    except OSError as exc:
        raise InvalidSchedule({source: f"cannot be read: {exc.strerror}"}) from None


def _decode(source: str, content: bytes) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSchedule({source: f"not UTF-8 text (byte {exc.start})"}) from None


def import_schedules(
    core: Core,
    celery: Celery,
    path: Path,
    *,
    actor: str,
    only_new: bool = False,
    revalidate: bool = False,
) -> list[ScheduleChange]:
    """Store every schedule in ``path`` after validating all of them; what it did to each.

    Each schedule becomes what its file says, overwriting edits made in the admin, the API or
    the CLI. With ``only_new`` it creates only the schedules missing from SQL and leaves the
    others untouched ("kept"). Every schedule it stores records its file as ``source``, and
    the file's digest: a file unchanged since, whose row was not written another way since,
    is not parsed again (``revalidate`` parses every file). All the changes are one
    transaction under one hold of the schedule lock, written through to RedBeat after the
    commit; when nothing changed, nothing is written to SQL or Redis.
    """
    with _no_collection(), entries.schedule_lock(celery):
        with core.reading() as session:
            imported = {} if revalidate else imported_digests(session)
        files = load_schedule_files(core, path, imported=imported)
        return _import(core, celery, files, actor=actor, only_new=only_new)


@contextmanager
def _no_collection() -> Iterator[None]:
    # An import of 10,000 files builds some 100,000 objects that live until it ends: Python's
    # cyclic collector, set off by the allocations, took about a third of the import's time.
    # What an import builds holds few cycles; the collector runs again once it is done.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _import(
    core: Core, celery: Celery, files: list[ScheduleFile], *, actor: str, only_new: bool
) -> list[ScheduleChange]:
    """The import's changes, under the schedule lock its caller holds."""
    parsed = [file for file in files if file.spec is not None]
    with core.reading() as session:
        rows = _rows_named(session, [file.name for file in parsed])
    changes = [_change(file, rows, only_new=only_new) for file in files]
    digests = {file.name: file.digest for file in parsed}
    changed = [change for change in changes if change.action in ("created", "updated")]
    if changed:
        written = _write_changes(core, rows, changed, digests, actor=actor)
        _follow_in_redbeat(celery, written)
    # Rows that match their file but not its digest (imported before digests, or edited back
    # to what the file says): the digest alone, so that the next import skips them.
    stale = [
        {"old_name": change.name, "digest": digests[change.name]}
        for change in changes
        if change.action == "unchanged"
        and change.name in digests
        and rows[change.name].source_digest != digests[change.name]
    ]
    if stale:
        table = Schedule.__table__
        with core.transaction() as session:
            session.execute(
                table.update()
                .where(table.c.name == bindparam("old_name"))
                .values(source_digest=bindparam("digest")),
                stale,
            )
    return changes


def _change(file: ScheduleFile, rows: Mapping[str, Any], *, only_new: bool) -> ScheduleChange:
    if file.spec is None:  # unchanged since its last import: its row is what it says
        return ScheduleChange(file.name, "kept" if only_new else "unchanged")
    if only_new and file.name in rows:
        return replace(compare(file.spec, rows[file.name]), action="kept")
    return compare(file.spec, rows.get(file.name), source=file.source)


def imported_digests(session: Session) -> dict[str, tuple[str, str]]:
    """Source -> (name, digest) of every row that still matches the file it came from."""
    columns = Schedule.__table__.columns
    query = select(columns.source, columns.name, columns.source_digest).where(
        columns.source_digest.is_not(None)
    )
    return {source: (name, digest) for source, name, digest in session.execute(query)}


def _rows_named(session: Session, names: list[str]) -> dict[str, Row[Any]]:
    """The name and audited columns of each named schedule that exists, by name."""
    found: dict[str, Row[Any]] = {}
    columns = Schedule.__table__.columns
    query = select(columns.name, columns.source_digest, *(columns[f] for f in AUDITED_FIELDS))
    for start in range(0, len(names), READ_BATCH):
        part = names[start : start + READ_BATCH]
        found.update(
            (row.name, row) for row in session.execute(query.where(columns.name.in_(part)))
        )
    return found


def _write_changes(
    core: Core,
    rows: Mapping[str, Any],
    changed: list[ScheduleChange],
    digests: Mapping[str, str],
    *,
    actor: str,
) -> list[Any]:
    """Store ``changed`` (with their files' digests) in one transaction, with their audit
    entries and change notes."""
    now = utcnow()
    created, updated, audits, written = [], [], [], []
    for change in changed:
        row = rows.get(change.name)
        before = snapshot(row) if row is not None else None
        after = {**(before or {}), **{name: value for name, (_, value) in change.fields.items()}}
        state = {"name": change.name, **after, "updated_at": now}
        state["source_digest"] = digests[change.name]
        if row is None:
            created.append({**state, "created_at": now})
        else:
            updated.append(state)
        action = "create" if row is None else "update"
        audits.append(_audit_row(actor, action, change.name, before, after, at=now))
        written.append(SimpleNamespace(**state))
    table = Schedule.__table__
    with core.transaction() as session:
        # Core statements, not ORM objects: one executemany each, whatever the count.
        if created:
            session.execute(table.insert(), created)
        if updated:
            by_name = table.update().where(table.c.name == bindparam("old_name"))
            session.execute(by_name, [{**state, "old_name": state["name"]} for state in updated])
        session.execute(AuditEntry.__table__.insert(), audits)
        record_changes(session, [change.name for change in changed])
    return written


def diff_schedules(core: Core, path: Path) -> list[ScheduleChange]:
    """What ``import_schedules(path)`` would do to each schedule now; writes nothing.

    The file paths are not compared: the same files named by another path are no drift.
    """
    files = load_schedule_files(core, path)
    with core.reading() as session:
        rows = _rows_named(session, [file.name for file in files])
    return [compare(file.spec, rows.get(file.name)) for file in files if file.spec is not None]
