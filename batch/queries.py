"""Read-side queries for the admin pages and the API: bounded, indexed, never all rows.

Each function reads a page (LIMIT) through an index or looks rows up by key, so its cost
does not grow with the size of the ``runs`` table. The Redis readers (due schedules, queue
lengths) take their client as an argument; ``overview`` uses the core's and the broker's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import kombu.exceptions
import redis
from celery import Celery
from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    case,
    func,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from batch import alert_delivery, alerts, capacity, health
from batch.core import Core
from batch.db import utcnow
from batch.exceptions import NotFound, UserError
from batch.models import (
    FAILED,
    GOING_STATES,
    RUN_STATES,
    SUCCEEDED,
    Alert,
    AuditEntry,
    Run,
    RunChunk,
    Schedule,
)
from batch.run_filters import RunFilter

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PAGE = 25
NO_FILTER = RunFilter()
MAX_PAGE = 200
MAX_PROGRESS_IDS = 200
CURSOR_SEP = "~"
#: Text that may be a run id (in a cursor, in a list of ids): printable ASCII, as ids are,
#: and nothing PostgreSQL refuses to compare (NUL).
RUN_ID_TEXT = re.compile(r"[!-~]{1,36}")
# kombu's Redis transport keeps a message sent with a priority in a list of its own,
# named after the queue: "<queue>\x06\x16<step>" (step 0 is the queue name itself).
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
NOT_AVAILABLE = "n/a"
#: The shortest run id prefix looked up; ids are lowercase UUIDs.
MIN_ID_PREFIX = 4
RUN_ID_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]*")
BROKER_TIMEOUT_SECONDS = 5
DOWN_ERRORS = (redis.RedisError, OSError, kombu.exceptions.KombuError)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    return ((end or utcnow()) - start).total_seconds()


@dataclass(frozen=True)
class Cursor:
    """A keyset position in the runs list: rows strictly older than (created_at, id)."""

    created_at: datetime
    run_id: str

    def __str__(self) -> str:
        return f"{self.created_at.isoformat()}{CURSOR_SEP}{self.run_id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The cursor written by ``str(cursor)``; UserError when it is malformed."""
        stamp, sep, run_id = text.partition(CURSOR_SEP)
        try:
            created_at = datetime.fromisoformat(stamp)
            if created_at.tzinfo is None:
                created_at = created_at.replace(tzinfo=UTC)
            # Stored in UTC: a time near the year 1 or 9999 may not exist there.
            created_at = created_at.astimezone(UTC)
        except (ValueError, OverflowError):
            created_at = None
        if not sep or created_at is None or not RUN_ID_TEXT.fullmatch(run_id):
            raise UserError(f"bad cursor {text!r}: expected <ISO timestamp>{CURSOR_SEP}<run id>")
        return cls(created_at, run_id)


@dataclass(frozen=True, kw_only=True)
class RunItem:
    """One row of the runs list (no params, result or error: they can be large)."""

    id: str
    job: str
    status: str
    trigger: str
    schedule_name: str | None
    scheduled_for: datetime | None
    chunk_count: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    chunks_done: int | None = None  # counted only while the run is queued or running

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to finish (to now while it runs); None before it starts."""
        return _seconds_between(self.started_at, self.finished_at)

    @property
    def going(self) -> bool:
        """Queued or running."""
        return self.status in GOING_STATES

    @property
    def cursor(self) -> Cursor:
        """The keyset position just after this row."""
        return Cursor(self.created_at, self.id)

    def as_json(self) -> dict[str, Any]:
        """The JSON view of a row of the runs list (``GET /api/runs``, ``batch runs list``);
        ``chunks_done`` only while the run is queued or running."""
        return {
            "run_id": self.id,
            "job": self.job,
            "status": self.status,
            "trigger": self.trigger,
            "schedule": self.schedule_name,
            "scheduled_for": _iso(self.scheduled_for),
            "chunks_done": self.chunks_done,
            "chunks_total": self.chunk_count,
            "created_at": self.created_at.isoformat(),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_seconds": self.duration_seconds,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# Chunks stored so far, looked up (by the run_chunks primary key) only for going runs:
# the list shows a progress bar for those alone.
CHUNKS_DONE = case(
    (
        Run.status.in_(GOING_STATES),
        select(func.count())
        .where(RunChunk.run_id == Run.id, RunChunk.status == SUCCEEDED)
        .correlate(Run)
        .scalar_subquery(),
    ),
    else_=None,
).label("chunks_done")

RUN_ITEM_COLUMNS = (
    Run.id,
    Run.job,
    Run.status,
    Run.trigger,
    Run.schedule_name,
    Run.scheduled_for,
    Run.chunk_count,
    Run.created_at,
    Run.started_at,
    Run.finished_at,
    CHUNKS_DONE,
)


def _run_items(session: Session, query: Select[Any] | CompoundSelect[Any]) -> list[RunItem]:
    return [RunItem(**row._asdict()) for row in session.execute(query)]


@dataclass(frozen=True)
class RunPage:
    """A page of runs, newest first, and the cursor of the next (older) page if any."""

    runs: list[RunItem]
    next_cursor: Cursor | None


def check_status(status: str) -> str:
    """``status`` if it is a run state, else UserError."""
    if status not in RUN_STATES:
        raise UserError(f"unknown status {status!r}: expected one of {', '.join(RUN_STATES)}")
    return status


def check_limit(limit: int, maximum: int = MAX_PAGE) -> int:
    """``limit`` if it is within 1..maximum, else UserError."""
    if not 1 <= limit <= maximum:
        raise UserError(f"bad limit {limit}: expected 1 to {maximum}")
    return limit


def list_runs(
    session: Session,
    where: RunFilter = NO_FILTER,
    *,
    before: Cursor | None = None,
    limit: int = DEFAULT_PAGE,
) -> RunPage:
    """Runs newest first that ``where`` matches, older than ``before``.

    Reads ``limit + 1`` rows to know if an older page exists, in the order of an index that
    starts with one of the filters (see batch.run_filters) or ``ix_runs_created``.
    """
    check_limit(limit)
    query = select(*RUN_ITEM_COLUMNS).where(*where.conditions())
    if before is not None:
        # The first term is an index range; the second breaks ties on created_at.
        query = query.where(
            Run.created_at <= before.created_at,
            or_(Run.created_at < before.created_at, Run.id < before.run_id),
        )
    query = query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit + 1)
    items = _run_items(session, query)
    more = len(items) > limit
    items = items[:limit]
    return RunPage(items, items[-1].cursor if more and items else None)


@dataclass(frozen=True)
class Progress:
    """A run's status and how many of its chunks have their partial stored."""

    status: str
    done: int
    total: int | None


def run_progress(session: Session, run_ids: Collection[str]) -> dict[str, Progress]:
    """Status and chunks done/total of each known run in ``run_ids``, in one grouped query."""
    if not run_ids:
        return {}
    if len(run_ids) > MAX_PROGRESS_IDS:
        raise UserError(f"too many run ids: at most {MAX_PROGRESS_IDS} at once")
    done = func.count(RunChunk.chunk_index)
    query = (
        select(Run.id, Run.status, Run.chunk_count, done)
        .outerjoin(RunChunk, and_(RunChunk.run_id == Run.id, RunChunk.status == SUCCEEDED))
        .where(Run.id.in_(list(run_ids)))
        .group_by(Run.id, Run.status, Run.chunk_count)
    )
    return {
        run_id: Progress(status, count, total)
        for run_id, status, total, count in session.execute(query)
    }


@dataclass(frozen=True, kw_only=True)
class ChunkItem:
    """One chunk of a run as the run page shows it (without its partial)."""

    index: int
    status: str
    attempts: int
    node: str | None
    error: str | None
    spec: dict[str, Any] | None
    traceback: str | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from the last attempt's start to its finish (to now while it runs)."""
        return _seconds_between(self.started_at, self.finished_at)


@dataclass(frozen=True)
class RunDetail:
    """A run with its chunks in index order."""

    run: Run
    chunks: list[ChunkItem]
    #: What people did to the run after it was created (its audit entries), oldest first.
    history: list[AuditEntry]

    @property
    def chunks_done(self) -> int:
        """Chunks whose partial is stored."""
        return sum(1 for chunk in self.chunks if chunk.status == SUCCEEDED)

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to finish (to now while it runs); None before it starts."""
        return _seconds_between(self.run.started_at, self.run.finished_at)


def find_run(session: Session, run_id: str) -> Run:
    """The run with this id or with this unique id prefix (the admin shows 8 characters).

    Raises NotFound when no run matches, and when a prefix matches several runs.
    """
    if not RUN_ID_TEXT.fullmatch(run_id):
        # No run has such an id (PostgreSQL would refuse a NUL in it outright).
        raise NotFound(f"run {run_id!r} not found")
    run = session.get(Run, run_id)
    if run is not None:
        return run
    prefix = run_id.lower()
    if len(prefix) >= MIN_ID_PREFIX and RUN_ID_PREFIX.fullmatch(prefix):
        # The range lets the primary key's index find the candidates; LIKE keeps them exact.
        # Its bounds are alphanumeric, so any collation orders them as bytes would.
        low = prefix.rstrip("-")
        high = low[:-1] + ("a" if low[-1] == "9" else chr(ord(low[-1]) + 1))
        matches = session.scalars(
            select(Run)
            .where(Run.id >= low, Run.id < high, Run.id.like(f"{prefix}%"))
            .order_by(Run.id)
            .limit(2)
        ).all()
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise NotFound(f"run id {run_id!r} matches several runs: give more of the id")
    raise NotFound(f"run {run_id} not found")


def run_detail(session: Session, run_id: str) -> RunDetail:
    """The run (by id or unique id prefix) and its chunks (a run has few), or NotFound."""
    run = find_run(session, run_id)
    history = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.object_type == "run", AuditEntry.object_name == run.id)
        .order_by(AuditEntry.at, AuditEntry.id)
        .limit(MAX_PAGE)
    )
    return RunDetail(run, run_chunks(session, run.id), list(history))


def run_chunks(session: Session, run_id: str) -> list[ChunkItem]:
    """The chunks of a run in index order, by primary key; never their partials."""
    rows = session.execute(
        select(
            RunChunk.chunk_index.label("index"),
            RunChunk.status,
            RunChunk.attempts,
            RunChunk.node,
            RunChunk.error,
            RunChunk.spec,
            RunChunk.traceback,
            RunChunk.started_at,
            RunChunk.finished_at,
        )
        .where(RunChunk.run_id == run_id)
        .order_by(RunChunk.chunk_index)
    )
    return [ChunkItem(**row._asdict()) for row in rows]


@dataclass(frozen=True, kw_only=True)
class ResultItem:
    """A succeeded run's params and aggregated result."""

    id: str
    created_at: datetime
    finished_at: datetime | None
    params: dict[str, Any]
    result: dict[str, Any] | None


def job_results(session: Session, where: RunFilter, limit: int = 20) -> list[ResultItem]:
    """The newest ``limit`` succeeded runs ``where`` matches (a job's, maybe of one schedule
    and a date range) with their results, newest first."""
    check_limit(limit)
    rows = session.execute(
        select(Run.id, Run.created_at, Run.finished_at, Run.params, Run.result)
        .where(*replace(where, status=SUCCEEDED).conditions())
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit)
    )
    return [ResultItem(**row._asdict()) for row in rows]


def latest_results(session: Session, jobs: Iterable[str]) -> dict[str, ResultItem | None]:
    """Each job's newest succeeded run (one indexed LIMIT 1 query per job)."""
    latest: dict[str, ResultItem | None] = {}
    for job in jobs:
        found = job_results(session, RunFilter(job=job), limit=1)
        latest[job] = found[0] if found else None
    return latest


def _newest(condition: ColumnElement[bool], limit: int, *columns: Any) -> Select[Any]:
    return (
        select(*columns)
        .where(condition)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit)
    )


@dataclass(frozen=True, kw_only=True)
class RunItemWithError(RunItem):
    """A run with its error (None unless it failed or was skipped)."""

    error: str | None = None


@functools.lru_cache(maxsize=16)
def _newest_query(states: tuple[str, ...], limit: int) -> CompoundSelect[Any]:
    # One bounded index range per state, in one statement: an IN over the states would
    # make the database sort all their runs to apply the LIMIT. Built once per
    # argument: building the subqueries costs more than running them.
    return union_all(
        *(
            _newest(Run.status == state, limit, *RUN_ITEM_COLUMNS, Run.error).subquery().select()
            for state in states
        )
    )


def newest_by_status(
    session: Session, states: tuple[str, ...], limit: int = 10
) -> dict[str, list[RunItemWithError]]:
    """The newest ``limit`` runs of each state in ``states``, newest first, in one query."""
    found: dict[str, list[RunItemWithError]] = {check_status(state): [] for state in states}
    for row in session.execute(_newest_query(states, limit)):
        found[row.status].append(RunItemWithError(**row._asdict()))
    for items in found.values():
        items.sort(key=lambda item: (item.created_at, item.id), reverse=True)
    return found


def _merged(groups: Iterable[list[RunItemWithError]], limit: int) -> list[RunItemWithError]:
    items = [item for group in groups for item in group]
    items.sort(key=lambda item: (item.created_at, item.id), reverse=True)
    return items[:limit]


def runs_going(session: Session, limit: int = 10) -> list[RunItemWithError]:
    """The newest ``limit`` queued or running runs with their chunks done, newest first."""
    return _merged(newest_by_status(session, GOING_STATES, limit).values(), limit)


def recent_failures(session: Session, limit: int = 10) -> list[RunItemWithError]:
    """The newest ``limit`` failed runs with their errors, newest first."""
    return newest_by_status(session, (FAILED,), limit)[FAILED]


@dataclass(frozen=True, kw_only=True)
class DueSchedule:
    """A RedBeat entry and the time it is due next."""

    name: str
    due_at: datetime
    job: str | None = None
    #: The zone its fire times are shown in: its cron line's (an interval's is UTC).
    zone: str = "UTC"

    @property
    def due_in_seconds(self) -> float:
        """Seconds until it is due (negative when it is late)."""
        return (self.due_at - utcnow()).total_seconds()


def schedules_due_next(
    client: redis.Redis, schedule_key: str, key_prefix: str, limit: int = 10
) -> list[DueSchedule]:
    """The ``limit`` RedBeat entries due soonest, read from the schedule zset."""
    entries = client.zrange(schedule_key, 0, limit - 1, withscores=True)
    return [
        DueSchedule(
            name=as_text(key).removeprefix(key_prefix), due_at=datetime.fromtimestamp(score, UTC)
        )
        for key, score in entries
    ]


def with_jobs(session: Session, due: list[DueSchedule]) -> list[DueSchedule]:
    """``due`` with each schedule's job and zone read from SQL (looked up by primary key)."""
    if not due:
        return due
    rows = session.execute(
        select(Schedule.name, Schedule.job, Schedule.cron, Schedule.timezone).where(
            Schedule.name.in_([d.name for d in due])
        )
    )
    found = {row.name: row for row in rows}
    return [
        DueSchedule(
            name=d.name,
            due_at=d.due_at,
            job=row.job if (row := found.get(d.name)) else None,
            zone=row.timezone if row is not None and row.cron else "UTC",
        )
        for d in due
    ]


def priority_lists(
    queue: str,
    *,
    sep: str = KOMBU_PRIORITY_SEP,
    priority_steps: Iterable[int] = KOMBU_PRIORITY_STEPS,
) -> list[str]:
    """The Redis lists that hold ``queue``'s messages on a Redis broker, one per priority."""
    return [f"{queue}{sep}{step}" if step else queue for step in priority_steps]


def queue_lengths(
    client: redis.Redis,
    queues: Iterable[str],
    *,
    sep: str = KOMBU_PRIORITY_SEP,
    priority_steps: Iterable[int] = KOMBU_PRIORITY_STEPS,
) -> dict[str, int]:
    """Messages waiting in each queue of a Redis broker, all priorities summed."""
    names = list(queues)
    steps = list(priority_steps)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            for key in priority_lists(name, sep=sep, priority_steps=steps):
                pipe.llen(key)
        sizes = pipe.execute()
    per_queue = len(steps)
    return {name: sum(sizes[i * per_queue : (i + 1) * per_queue]) for i, name in enumerate(names)}


def as_text(value: str | bytes) -> str:
    """A Redis reply as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else value


def broker_queue_lengths(
    celery: Celery, queues: Iterable[str] | None = None
) -> dict[str, int | str]:
    """Messages waiting per queue (the configured ones by default) on a Redis or AMQP broker.

    "n/a" for each queue on any other broker.
    """
    names = list(celery.batch_core.settings.queues if queues is None else queues)
    with celery.pool.acquire(block=True, timeout=BROKER_TIMEOUT_SECONDS) as connection:
        driver = connection.transport.driver_type
        if driver not in ("redis", "amqp"):
            return dict.fromkeys(names, NOT_AVAILABLE)
        # One attempt: a page must not wait through kombu's reconnect back-off.
        connection.ensure_connection(max_retries=0)
        if driver == "amqp":
            return {name: _amqp_queue_length(connection, name) for name in names}
        channel = connection.default_channel
        return dict(
            queue_lengths(
                channel.client, names, sep=channel.sep, priority_steps=channel.priority_steps
            )
        )


def _amqp_queue_length(connection: Any, name: str) -> int:
    # A passive declare reads the count without creating the queue; a missing queue
    # closes the channel, so each queue gets a channel of its own.
    channel = connection.channel()
    try:
        return channel.queue_declare(queue=name, passive=True).message_count
    except connection.channel_errors:
        return 0
    finally:
        with contextlib.suppress(*connection.channel_errors, *connection.connection_errors):
            channel.close()


@dataclass(frozen=True, kw_only=True)
class Overview:
    """What the front page shows; a Redis part that could not be read is None."""

    due: list[DueSchedule] | None
    going: list[RunItemWithError]
    failures: list[RunItemWithError]
    queues: dict[str, int | str] | None
    workers: dict[str, dict[str, Any]] | None
    alerts: list[Alert] = field(default_factory=list)
    #: How each of those alerts went out to the webhooks and e-mail (alert_delivery).
    deliveries: dict[str, str] = field(default_factory=dict)
    #: The active beat's last report (batch/health.py); None when Redis did not answer.
    beat: health.BeatHealth | None = None


def overview(core: Core, celery: Celery, limit: int = 10) -> Overview:
    """Schedules due next, runs going now, recent failures, queue lengths, workers online."""
    # RedBeat's Redis is the core's (create_celery sets redbeat_redis_url to REDIS_URL).
    conf = celery.redbeat_conf
    due = unless_down(
        lambda: schedules_due_next(core.redis, conf.schedule_key, conf.key_prefix, limit)
    )
    with core.reading() as session:
        newest = newest_by_status(session, (*GOING_STATES, FAILED), limit)
        raised = alerts.open_alerts(session, limit)
        deliveries = alert_delivery.delivery_states(session, [alert.id for alert in raised])
        if due:
            due = with_jobs(session, due)
    # Redis that did not answer once is not asked again in this request: a hung server
    # costs the page one timeout, not one per part.
    redis_answers = due is not None
    broker_is_redis = core.settings.effective_broker_url == core.settings.redis_url
    return Overview(
        due=due,
        going=_merged((newest[state] for state in GOING_STATES), limit),
        failures=newest[FAILED],
        queues=unless_down(lambda: broker_queue_lengths(celery))
        if redis_answers or not broker_is_redis
        else None,
        workers=unless_down(lambda: capacity.online_workers(core.redis)) if redis_answers else None,
        alerts=raised,
        deliveries=deliveries,
        beat=unless_down(lambda: health.read(core.redis)) if redis_answers else None,
    )


def unless_down(read: Callable[[], T], reader: str = "overview") -> T | None:
    """``read()``, or None when Redis or the broker does not answer (logged): a page stays
    up, /healthz says why."""
    try:
        return read()
    except DOWN_ERRORS as exc:
        log.warning("%s: Redis or broker unavailable: %s", reader, exc)
        return None
