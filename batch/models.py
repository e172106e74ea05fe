"""SQL tables: runs, their chunks, schedules, the audit log, alerts and the demo orders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from batch.db import UTCDateTime, utcnow

# Run and chunk states.
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
CANCELLED = "cancelled"
FINISHED_STATES = (SUCCEEDED, FAILED, SKIPPED, CANCELLED)
#: A fire that waits for its schedule's run to end (``overlap = "buffer_one"``).
WAITING = "waiting"
RUN_STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, SKIPPED, CANCELLED, WAITING)
#: The states of a run that has not ended.
GOING_STATES = (QUEUED, WAITING, RUNNING)
#: A chunk planned and sent, not started yet.
PENDING = "pending"

#: What started a run (``Run.trigger_kind``), told by the start of its trigger text: a
#: schedule's fire (``schedule:NAME``), a user of the admin (``user:NAME``), an API token
#: (``api:NAME``), the command line (``cli``), a backfill (``backfill:ID by ACTOR``);
#: anything else is "other".
TRIGGER_PREFIXES = {
    "schedule": "schedule:", "user": "user:", "api": "api:", "cli": "cli", "backfill": "backfill:",
}  # fmt: skip
TRIGGER_KINDS = (*TRIGGER_PREFIXES, "other")


def trigger_kind(trigger: str) -> str:
    """The kind of a trigger text (one of TRIGGER_KINDS)."""
    for kind, prefix in TRIGGER_PREFIXES.items():
        if trigger.startswith(prefix):
            return kind
    return "other"


def _trigger_kind_of_row(context: DefaultExecutionContext) -> str:
    return trigger_kind(context.get_current_parameters()["trigger"])


# IDs are BIGINT on PostgreSQL and INTEGER (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Run(Base):
    """One execution of a job: its params, status, progress and aggregated result."""

    __tablename__ = "runs"
    __table_args__ = (
        # One run per fire: a fire delivered twice finds this row and stops.
        UniqueConstraint("schedule_name", "scheduled_for", name="uq_runs_schedule_fire"),
        Index("ix_runs_job_created", "job", "created_at"),
        Index("ix_runs_status_created", "status", "created_at"),
        Index("ix_runs_created", "created_at"),
        Index("ix_runs_schedule_created", "schedule_name", "created_at"),
        Index("ix_runs_job_status_created", "job", "status", "created_at"),
        Index("ix_runs_trigger_kind_created", "trigger_kind", "created_at"),
        # A backfill's runs by status: how many it has going, and its progress.
        Index("ix_runs_backfill_status", "backfill_id", "status"),
        # Queued runs with no start sent yet (buffered fires released): the run driver's look.
        Index("ix_runs_status_sent", "status", "sent_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default=QUEUED)
    trigger: Mapped[str] = mapped_column(String(200))
    #: The kind of ``trigger`` (TRIGGER_KINDS), kept for the runs list's trigger filter.
    trigger_kind: Mapped[str] = mapped_column(
        String(20), default=_trigger_kind_of_row, server_default="other"
    )
    schedule_name: Mapped[str | None] = mapped_column(String(200))
    scheduled_for: Mapped[datetime | None]
    queue: Mapped[str] = mapped_column(String(100))
    chunk_count: Mapped[int | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: When its start message was last sent (at submit, or again by the recovery sweep).
    sent_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: The backfill that made it (batch/backfills.py), for a run of a past fire.
    backfill_id: Mapped[int | None] = mapped_column(BigId)


class RunChunk(Base):
    """One chunk of a run; its partial is stored once, keyed by (run_id, chunk_index)."""

    __tablename__ = "run_chunks"

    run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    chunk_index: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    #: The chunk's spec as planned: any process can send the chunk again from it.
    spec: Mapped[dict[str, Any] | None]
    #: Times it started running (each start on a worker counts).
    attempts: Mapped[int] = mapped_column(default=0)
    #: Times its message was sent: the first send and each one the recovery sweep made.
    sends: Mapped[int] = mapped_column(default=1, server_default="1")
    sent_at: Mapped[datetime | None]
    #: The worker node (Celery hostname) that started it last.
    node: Mapped[str | None] = mapped_column(String(255))
    partial: Mapped[dict[str, Any] | None]
    #: Why it failed, in one line: ``ValueError: message``.
    error: Mapped[str | None] = mapped_column(Text)
    #: Where it failed: the exception's traceback, its head and tail kept within a bound.
    traceback: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Schedule(Base):
    """The durable truth of a schedule; RedBeat entries are derived from these rows."""

    __tablename__ = "schedules"
    __table_args__ = (
        # The list's filters, each in name order (the admin's pages, `batch schedules list`).
        # None on enabled alone: most schedules are, and SQLite (without ANALYZE) would take
        # it over the job's index for a job and enabled filter. A job's enabled schedules
        # have their own: counted from the index alone, without reading each row.
        Index("ix_schedules_job", "job", "name"),
        Index("ix_schedules_job_enabled", "job", "enabled", "name"),
        Index("ix_schedules_queue", "queue", "name"),
    )

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    job: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]]
    cron: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    interval_seconds: Mapped[int | None]
    enabled: Mapped[bool] = mapped_column(default=True)
    overlap: Mapped[str] = mapped_column(String(20), default="allow")
    queue: Mapped[str | None] = mapped_column(String(100))
    priority: Mapped[int | None]
    deadline_seconds: Mapped[int | None]
    must_start_within_seconds: Mapped[int | None]
    must_succeed_within_seconds: Mapped[int | None]
    alert_after_failures: Mapped[int] = mapped_column(default=1, server_default="1")
    pause_after_failures: Mapped[int | None]
    #: Why it paused itself (failures in a row); cleared when it is enabled again.
    paused_reason: Mapped[str | None] = mapped_column(Text)
    #: Since when it is disabled (paused, or by a person): where resuming catches up from.
    disabled_at: Mapped[datetime | None]
    #: Fires missed while beat was down: ``skip``, ``latest`` (the newest runs) or ``each``
    #: (each one within ``catch_up_window_seconds``, the newest ``catch_up_max`` at most).
    catch_up: Mapped[str] = mapped_column(String(10), default="latest", server_default="latest")
    catch_up_window_seconds: Mapped[int] = mapped_column(default=86400, server_default="86400")
    catch_up_max: Mapped[int] = mapped_column(default=10, server_default="10")
    description: Mapped[str] = mapped_column(Text, default="")
    #: The file it was last imported from (``schedules/x.toml``); None if made in the admin/API.
    source: Mapped[str | None] = mapped_column(Text)
    #: The digest of that file (and of what validating it depends on) when the row last
    #: matched it; None once the row is written any other way. An import skips the files
    #: whose digest is unchanged (batch/schedules.py, ``load_schedule_files``).
    source_digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScheduleChange(Base):
    """A note that a schedule was created, changed or deleted: reconcile follows these.

    Each schedule write adds one in its transaction. A reconcile pass applies the changes
    after the revision it reached last (kept in Redis), so it costs what changed, not what
    exists; a full pass, which compares everything, prunes the notes it has covered.
    """

    __tablename__ = "schedule_changes"
    # SQLite may reuse the largest id once its row is gone; AUTOINCREMENT never does.
    __table_args__ = {"sqlite_autoincrement": True}

    revision: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """Something a person must see: raised once per cause, resolved by the schedule's next
    successful run (batch/alerts.py)."""

    __tablename__ = "alerts"
    __table_args__ = (
        # The open alerts, newest first (the overview); a schedule's alerts (its page).
        Index("ix_alerts_open", "resolved_at", "raised_at"),
        Index("ix_alerts_schedule", "schedule_name", "raised_at"),
    )

    #: The cause (``missed_deadline:<schedule>:<fire>``): a cause raises one alert, whoever
    #: sees it first.
    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    schedule_name: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(36))
    message: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    #: The run whose success resolved it.
    resolved_by: Mapped[str | None] = mapped_column(String(36))


class AlertEvent(Base):
    """An alert raised or resolved: the outbox its deliveries are made from, written in the
    transaction that raised or resolved it (batch/alert_delivery.py)."""

    __tablename__ = "alert_events"
    __table_args__ = (
        # The events not yet turned into deliveries, oldest first.
        Index("ix_alert_events_new", "expanded_at", "id"),
        # An alert's events: how it went out, on the admin's alert tables.
        Index("ix_alert_events_alert", "alert_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(300))
    #: ``raised`` or ``resolved``.
    event: Mapped[str] = mapped_column(String(10))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    #: When its deliveries (one per configured target) were recorded.
    expanded_at: Mapped[datetime | None]


class AlertDelivery(Base):
    """One event sent to one target (a webhook URL, ``mailto:<address>``), until it is taken."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        # The deliveries due, by state then time.
        Index("ix_alert_deliveries_due", "state", "next_attempt_at"),
    )

    event_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("alert_events.id", ondelete="CASCADE"), primary_key=True
    )
    target: Mapped[str] = mapped_column(String(2000), primary_key=True)
    #: ``pending``, ``delivered`` or ``failed`` (given up after BATCH_ALERT_RETRY_HOURS).
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]


class AuditEntry(Base):
    """Who changed which schedule, when, and the state before and after."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_object", "object_type", "object_name", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(20))
    object_type: Mapped[str] = mapped_column(String(50))
    object_name: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]


class Order(Base):
    """Demo sales data read by ``reports.sales_summary``."""

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime]
    region: Mapped[str] = mapped_column(String(50))
    product: Mapped[str] = mapped_column(String(100))
    quantity: Mapped[int]
    amount_cents: Mapped[int] = mapped_column(BigInteger)


class User(Base):
    """A person who signs in to the admin; the password is stored hashed."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    #: What it opens: ``api`` (the JSON API and /metrics) or ``metrics`` (/metrics only).
    scope: Mapped[str] = mapped_column(String(10), default="api", server_default="api")


class UserSession(Base):
    """A signed-in admin session; the cookie carries its id, SQL only its SHA-256.

    Deleting the row (sign-out, the user removed, a new password) ends the session.
    """

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_expires", "expires_at"),)

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(
        String(100), ForeignKey("users.name", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


#: A backfill's states: making and watching its runs, then done (or cancelled).
BACKFILL_STATES = ("running", "done", "cancelled")


class Backfill(Base):
    """Runs for the past fires of a schedule in a range, made a few at a time
    (batch/backfills.py)."""

    __tablename__ = "backfills"
    __table_args__ = (
        Index("ix_backfills_state", "state"),
        Index("ix_backfills_schedule_created", "schedule_name", "created_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    schedule_name: Mapped[str] = mapped_column(String(200))
    #: The fires from ``since`` (included) to ``until`` (excluded).
    since: Mapped[datetime]
    until: Mapped[datetime]
    #: Which fires get a run: ``missing``, ``failed`` or ``all``.
    only: Mapped[str] = mapped_column(String(10))
    #: The most of its runs queued or running at once.
    max_running: Mapped[int]
    state: Mapped[str] = mapped_column(String(10), default="running")
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    #: The fires in the range, and how many were looked at so far.
    fires: Mapped[int]
    fires_done: Mapped[int] = mapped_column(default=0)
    #: The next fire to look at; None once every fire was.
    next_fire: Mapped[datetime | None]
    #: Runs made (new ones, and ones that replaced an earlier run of their fire).
    runs_made: Mapped[int] = mapped_column(default=0)


class RunStat(Base):
    """One running total behind ``/metrics`` (batch/run_stats.py): counted in the
    transaction that started or ended a run, so a run counts once whatever is redelivered,
    and it stays when old runs are purged."""

    __tablename__ = "run_stats"

    job: Mapped[str] = mapped_column(String(200), primary_key=True)
    #: The schedule's name; "" for runs of no schedule.
    schedule_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    #: ``runs`` (by status), ``skips`` (by reason), ``lateness`` and ``duration`` (by
    #: bucket), their ``..._sum``, ``last_fire`` and ``last_success`` (epoch seconds).
    series: Mapped[str] = mapped_column(String(20), primary_key=True)
    label: Mapped[str] = mapped_column(String(20), primary_key=True)
    value: Mapped[float] = mapped_column(Double)
