"""The run engine: submit, plan into a chord of chunks, store partials, aggregate.

Every step is idempotent: a message delivered twice finds the state it already wrote.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from celery import Celery, Signature, chord
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from batch import capacity, queries, run_stats, storable
from batch.celery_app import message_priority
from batch.constants import (
    SENT_AT_HEADER,
    TASK_FAIL_RUN,
    TASK_FINISH_RUN,
    TASK_RUN_CHUNK,
    TASK_START_RUN,
)
from batch.core import Core
from batch.db import insert_ignoring_duplicates, utcnow
from batch.exceptions import (
    BatchError,
    Conflict,
    InvalidParams,
    NotFound,
    ServiceUnavailable,
    UnknownJob,
)
from batch.jobs import Job, Partial, Spec
from batch.models import (
    FAILED,
    GOING_STATES,
    PENDING,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    Run,
    RunChunk,
    Schedule,
)
from batch.overlap import BUFFER_ONE, CANCEL_OTHER, SKIP, holds_back
from batch.run_ends import cancel, finish, live_runs

log = logging.getLogger(__name__)

RUN_ID_NAMESPACE = uuid.UUID("5b0c3a52-6a39-4b59-9d0e-4f1b7c1a9e11")
#: A failed chunk's stored traceback is cut to this many characters: its first quarter (the
#: outer frames, and a chained exception's first cause) and the rest of its tail (the
#: innermost frames and the exception itself), around a marker saying how much was cut.
MAX_TRACEBACK_CHARS = 8000
#: Room kept for the marker: "[... N characters cut ...]" and its line ends.
_CUT_MARKER_ROOM = 64


#: A fire sent this long after its fire time was missed (beat down or behind): a schedule
#: whose ``catch_up`` is ``skip`` skips it.
MISSED_AFTER_SECONDS = 60


class MissingChunks(BatchError):
    """``finish_run`` was called while some chunks have no stored partial yet."""


@dataclass(frozen=True, kw_only=True)
class Fire:
    """One firing of a schedule, as beat sends it."""

    schedule: str
    scheduled_for: datetime
    overlap: str = "allow"
    deadline_seconds: int | None = None
    #: When its start message was sent (beat's, or the sweep's resend), when known.
    sent_at: datetime | None = None


def scheduled_run_id(schedule: str, scheduled_for: datetime) -> str:
    """The run id of one fire: the same fire always maps to the same run."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{schedule}@{scheduled_for.isoformat()}"))


def submit_run(
    core: Core,
    celery: Celery,
    job_name: str,
    raw_params: dict[str, Any],
    *,
    trigger: str,
    schedule: Schedule | None = None,
) -> str:
    """Validate, record a queued run and send ``start_run``; returns the run id.

    With ``schedule`` ("run now") the run counts as that schedule's, on its queue and
    priority. Raises UnknownJob or InvalidParams before anything is written or sent, and
    ServiceUnavailable (the run then stored as failed) when the broker does not take it.
    """
    job = core.jobs.get(job_name)
    params = job.validate_params(raw_params, now=utcnow()).model_dump(mode="json")
    problem = storable.value_problem(params)
    if problem:
        raise InvalidParams(job.name, {"params": problem})
    run_id = str(uuid.uuid4())
    queue = (schedule.queue if schedule else None) or job.queue
    trigger = trigger[: Run.trigger.type.length]
    sent_at = utcnow()
    with core.transaction() as session:
        session.add(
            Run(
                id=run_id,
                job=job.name,
                params=params,
                trigger=trigger,
                queue=queue,
                schedule_name=schedule.name if schedule else None,
                sent_at=sent_at,
            )
        )
    options = sent_at_header(sent_at)
    if schedule is not None and schedule.priority is not None:
        options["priority"] = message_priority(celery, schedule.priority)
    try:
        celery.send_task(
            TASK_START_RUN,
            kwargs={"job": job.name, "params": params, "run_id": run_id, "trigger": trigger},
            queue=queue,
            ignore_result=True,
            **options,
        )
    except Exception as exc:
        with core.transaction() as session:
            finish(session, run_id, FAILED, error=f"could not queue: {describe_error(exc)}")
        raise ServiceUnavailable(f"could not queue run {run_id}: {describe_error(exc)}") from exc
    return run_id


def cancel_run(core: Core, run_id: str, *, actor: str) -> Run:
    """Cancel a queued or running run (by id or unique prefix); returns it, now cancelled.

    Its chunks not started yet never run (``run_chunk`` only runs chunks of a running run)
    and are marked cancelled; a chunk already running finishes, and its partial is stored but
    changes nothing. Raises NotFound, and Conflict for a run that already ended.
    """
    now = utcnow()
    with core.transaction() as session:
        run = queries.find_run(session, run_id)
        if not cancel(session, [run.id], f"cancelled by {actor}", now):
            raise Conflict(
                f"run {run.id} is {run.status}: only a queued, waiting or running run can be"
                " cancelled"
            )
        session.refresh(run)
    log.info("run %s cancelled by %s", run.id, actor)
    return run


def start_run(
    core: Core,
    celery: Celery,
    *,
    job: str,
    params: dict[str, Any],
    trigger: str,
    run_id: str | None = None,
    fire: Fire | None = None,
    queue: str | None = None,
    priority: int | None = None,
) -> str | None:
    """Create or claim the run, plan its chunks and launch the chord; returns the run id.

    Returns None when the run was already claimed (a duplicate delivery or fire). A run
    that cannot be planned (unknown job, bad params, a failing plan) is stored as failed.
    ``queue`` is the one the start message came on (the configured default when not given).
    """
    now = utcnow()
    queue = queue or core.settings.default_queue
    if fire is not None and run_id is None:
        run_id = scheduled_run_id(fire.schedule, fire.scheduled_for)
    assert run_id is not None, "a run needs an id or a fire"
    with core.transaction() as session:
        # A fire's run is created here, already claimed; a submitted run, or a fire whose
        # row exists (a duplicate, or one the recovery sweep recorded), is claimed once.
        created = fire is not None and insert_ignoring_duplicates(
            session,
            Run,
            {
                "id": run_id,
                "job": job,
                "params": params,
                "status": RUNNING,
                "trigger": trigger,
                "schedule_name": fire.schedule,
                "scheduled_for": fire.scheduled_for,
                "queue": queue,
                "created_at": now,
                "sent_at": now,
                "started_at": now,
            },
        )
        if not created and not _claim(session, run_id, now):
            log.info("run %s already started: duplicate delivery ignored", run_id)
            return None
        if fire is not None:
            stats = run_stats.Key(job, fire.schedule)
            run_stats.moment(session, stats, run_stats.LAST_FIRE, fire.scheduled_for)
            skip = _skip_reason(session, run_id, fire, now, created)
            if skip:
                finish(session, run_id, SKIPPED, error=skip.message, reason=skip.reason)
                return run_id
            if fire.overlap in (BUFFER_ONE, CANCEL_OTHER) and holds_back(
                session, run_id, fire, now
            ):
                return run_id
            lateness = (now - fire.scheduled_for).total_seconds()
            run_stats.observe(session, stats, run_stats.LATENESS, lateness)
        try:
            job_obj = core.jobs.get(job)
            validated = job_obj.validate_params(params, now=fire.scheduled_for if fire else now)
            specs = job_obj.plan(validated, chunks=_target_chunks(core, queue), db=session)
        except Exception as exc:
            finish(session, run_id, FAILED, error=_planning_error(exc))
            log.exception("run %s failed while planning", run_id)
            return run_id
        resolved = validated.model_dump(mode="json")
        session.execute(
            update(Run).where(Run.id == run_id).values(params=resolved, chunk_count=len(specs))
        )
        _store_plan(session, run_id, specs, now)
        if not specs:
            finish(session, run_id, SUCCEEDED, result=job_obj.reduce([]))
            return run_id
    # If this send fails, the chunks wait in SQL as `pending`: the recovery sweep sends them.
    targets = list(enumerate(specs))
    launch_chunks(
        celery, job_obj, run_id, targets, resolved, queue=queue, priority=priority, sent_at=now
    )
    return run_id


def _store_plan(session: Session, run_id: str, specs: list[Spec], now: datetime) -> None:
    # The plan lives in SQL, in the transaction that claims the run: any process can send
    # any chunk again from it, whatever Celery or Redis forgot.
    if specs:
        session.execute(
            insert(RunChunk),
            [
                {"run_id": run_id, "chunk_index": index, "status": PENDING, "spec": spec,
                 "attempts": 0, "sends": 1, "sent_at": now}
                for index, spec in enumerate(specs)
            ],
        )  # fmt: skip


def _claim(session: Session, run_id: str, now: datetime) -> bool:
    claimed = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == QUEUED)
        .values(status=RUNNING, started_at=now)
    )
    return claimed.rowcount == 1


@dataclass(frozen=True)
class Skip:
    """Why a fire is skipped: a reason for the metrics, and a message for people."""

    reason: str
    message: str


def _skip_reason(
    session: Session, run_id: str, fire: Fire, now: datetime, first_delivery: bool
) -> Skip | None:
    schedule = session.execute(
        select(Schedule.enabled, Schedule.catch_up).where(Schedule.name == fire.schedule)
    ).one_or_none()
    # Disabled (or paused) after beat sent the fire, before reconcile removed its entry.
    if schedule is not None and not schedule.enabled:
        return Skip("disabled", f"skipped: schedule {fire.schedule} is disabled")
    # Beat's lateness, judged on the fire's first delivery (not on a start sent again: a
    # buffered fire released, a lost message).
    sent_at = fire.sent_at if first_delivery else None
    if sent_at is not None and schedule is not None and schedule.catch_up == "skip":
        missed = (sent_at - fire.scheduled_for).total_seconds()
        if missed > MISSED_AFTER_SECONDS:
            why = f"skipped: missed, sent {missed:.0f}s after its fire time (catch_up = skip)"
            return Skip("missed", why)
    if fire.deadline_seconds is not None:
        late = (now - fire.scheduled_for).total_seconds()
        if late > fire.deadline_seconds:
            why = f"skipped: started {late:.0f}s late, deadline {fire.deadline_seconds}s"
            return Skip("deadline", why)
    if fire.overlap == SKIP:
        going = session.scalar(live_runs(fire.schedule, GOING_STATES, but=run_id).limit(1))
        if going:
            return Skip("overlap", f"skipped: run {going} of this schedule is still going")
    return None


def _target_chunks(core: Core, queue: str) -> int:
    try:
        processes = capacity.processes_for_queue(core.redis, queue)
    except redis.RedisError as exc:
        # Redis away (a RabbitMQ broker still delivers): plan from the settings, not fail.
        log.warning("worker capacity unknown, planning for the configured one: %s", exc)
        processes = 0
    processes = processes or core.settings.worker_concurrency or 1
    return processes * core.settings.chunks_per_process


def launch_chunks(
    celery: Celery,
    job: Job,
    run_id: str,
    specs: list[tuple[int, Spec]],
    params: dict[str, Any],
    *,
    queue: str,
    priority: int | None,
    sent_at: datetime,
) -> None:
    """Send the chunks ``specs`` (index, spec) of run ``run_id`` as a chord whose callback
    aggregates the run (it reads every stored partial, not only these chunks')."""
    options: dict[str, Any] = {"queue": queue, **sent_at_header(sent_at)}
    if priority is not None:
        options["priority"] = priority
    header = [
        _chunk_signature(celery, job, run_id, index, spec, params, options) for index, spec in specs
    ]
    callback = celery.signature(TASK_FINISH_RUN, args=(run_id,), **options)
    callback.on_error(celery.signature(TASK_FAIL_RUN, args=(run_id,), **options))
    chord(header)(callback)


def _chunk_signature(
    celery: Celery,
    job: Job,
    run_id: str,
    index: int,
    spec: Spec,
    params: dict[str, Any],
    options: dict[str, Any],
) -> Signature:
    return celery.signature(
        TASK_RUN_CHUNK,
        args=(run_id, job.name, index, spec, params),
        # Celery's own log lines ("Task <shadow>[<task id>] received") then name the chunk.
        shadow=f"run {run_id} chunk {index}",
        soft_time_limit=job.soft_time_limit,
        time_limit=job.time_limit,
        **options,
    )


def send_start_again(core: Core, celery: Celery, run: Run) -> bool:
    """Send a queued run's start message again (its first was lost); False if it moved on.

    ``start_run`` claims a run once, so a start message that was not lost after all only
    finds the run claimed.
    """
    now = utcnow()
    with core.transaction() as session:
        moved = session.execute(
            update(Run)
            .where(Run.id == run.id, Run.status == QUEUED, _same(Run.sent_at, run.sent_at))
            .values(sent_at=now)
        )
        if moved.rowcount != 1:
            return False
        celery.send_task(
            TASK_START_RUN,
            kwargs=_start_kwargs(session, run),
            queue=run.queue,
            ignore_result=True,
            **sent_at_header(now),
        )
    return True


def _start_kwargs(session: Session, run: Run) -> dict[str, Any]:
    """``start_run``'s arguments for a run recorded in SQL; a fire's with its schedule's
    overlap policy and deadline, so a late start is judged as beat's first one would be (a
    backfill's run is no live fire: it is judged by neither)."""
    kwargs: dict[str, Any] = {
        "job": run.job, "params": run.params, "run_id": run.id, "trigger": run.trigger,
    }  # fmt: skip
    live_fire = run.scheduled_for is not None and run.backfill_id is None
    if run.schedule_name is not None and live_fire:
        schedule = session.get(Schedule, run.schedule_name)
        kwargs |= {
            "schedule": run.schedule_name,
            "scheduled_for": run.scheduled_for.isoformat(),
            "overlap": schedule.overlap if schedule else "allow",
            "deadline_seconds": schedule.deadline_seconds if schedule else None,
        }
    return kwargs


def restart_held_fire(
    core: Core, celery: Celery, kwargs: dict[str, Any], *, queue: str, priority: int | None
) -> str | None:
    """Record a fire whose start message was taken and never started as a queued run, and
    send its start again; the run id, or None when the fire's run exists (or it is no fire).

    ``kwargs`` are the start message's as beat sent them: the run id derived from them is
    the one the lost message would have created, so the fire still runs once.
    """
    if kwargs.get("run_id") or not kwargs.get("schedule") or not kwargs.get("scheduled_for"):
        return None
    try:
        scheduled_for = datetime.fromisoformat(str(kwargs["scheduled_for"]))
    except ValueError:
        return None
    if scheduled_for.tzinfo is None:
        return None  # beat's fire times carry their zone: this message is not beat's
    run_id = scheduled_run_id(kwargs["schedule"], scheduled_for)
    with core.reading() as session:
        if session.get(Run, run_id) is not None:
            return None
    now = utcnow()
    with core.transaction() as session:
        recorded = insert_ignoring_duplicates(
            session,
            Run,
            {
                "id": run_id,
                "job": kwargs.get("job", ""),
                "params": kwargs.get("params") or {},
                "status": QUEUED,
                "trigger": str(kwargs.get("trigger", ""))[: Run.trigger.type.length],
                "schedule_name": kwargs["schedule"],
                "scheduled_for": scheduled_for,
                "queue": queue,
                "created_at": now,
                "sent_at": now,
            },
        )
        if not recorded:
            return None
        options = sent_at_header(now)
        if priority is not None:
            options["priority"] = priority
        celery.send_task(TASK_START_RUN, kwargs=kwargs, queue=queue, ignore_result=True, **options)
    return run_id


def sent_at_header(sent_at: datetime) -> dict[str, Any]:
    """Send options putting ``sent_at`` (the time stored in SQL with the send) in the message.

    The recovery sweep compares it with the oldest message waiting in a queue: a message sent
    before that one is no longer in the queue.
    """
    return {"headers": {SENT_AT_HEADER: sent_at.isoformat()}}


def _same(column: Any, value: datetime | None) -> Any:
    return column.is_(None) if value is None else column == value


def send_chunk_again(core: Core, celery: Celery, run: Run, chunk: RunChunk) -> bool:
    """Send one chunk again from its stored spec (its message or its node was lost).

    False when the chunk moved on meanwhile. The partial is stored once per chunk, so a
    first message that was not lost after all changes nothing.
    """
    job = core.jobs.get(run.job)
    now = utcnow()
    with core.transaction() as session:
        moved = session.execute(
            update(RunChunk)
            .where(
                RunChunk.run_id == run.id,
                RunChunk.chunk_index == chunk.chunk_index,
                RunChunk.status == chunk.status,
                RunChunk.sends == chunk.sends,
            )
            .values(status=PENDING, node=None, sends=chunk.sends + 1, sent_at=now)
        )
        if moved.rowcount != 1:
            return False
        # Sent inside the transaction: if the broker refuses it, nothing says it was sent.
        signature = _chunk_signature(
            celery, job, run.id, chunk.chunk_index, chunk.spec or {}, run.params,
            {"queue": run.queue, **sent_at_header(now)},
        )  # fmt: skip
        signature.apply_async(ignore_result=True)
    return True


def run_chunk(
    core: Core,
    run_id: str,
    job: str,
    index: int,
    spec: Spec,
    params: dict[str, Any],
    *,
    node: str | None = None,
) -> bool:
    """Compute and store one chunk's partial on worker ``node``; False when there is nothing
    to do (already stored, the run no longer running, or the chunk out of attempts)."""
    job_obj = core.jobs.get(job)
    attempt = _mark_running(core, run_id, index, node)
    if attempt is None:
        return False
    validated = job_obj.validate_params(params, now=utcnow())
    began = time.monotonic()
    try:
        if job_obj.writes:
            with core.transaction() as session:
                if _chunk_stored(session, run_id, index):
                    log.info("run %s chunk %s already stored: nothing to do", run_id, index)
                    return False
                partial = job_obj.process(spec, validated, db=session)
                stored = _store_partial(core, session, run_id, index, partial)
        elif core.reads_apart:  # SQLite: no write lock held while the chunk is processed
            with core.reading() as session:
                partial = job_obj.process(spec, validated, db=session)
            with core.transaction() as session:
                stored = _store_partial(core, session, run_id, index, partial)
        else:  # one transaction reads and stores: one commit less per chunk
            with core.transaction() as session:
                partial = job_obj.process(spec, validated, db=session)
                stored = _store_partial(core, session, run_id, index, partial)
    except Exception as exc:
        if (stop := stopping_cause(exc)) is not None:
            # The process is being stopped (a signal raised SystemExit inside a library,
            # which then failed on its broken state): not the chunk's error. The process
            # ends, and its message goes back to the queue, to run again.
            raise stop from exc
        _record_chunk_error(core, run_id, index, exc, attempt=attempt)
        raise
    elapsed = time.monotonic() - began
    if stored:
        log.info("run %s chunk %s stored on attempt %s in %.3f s", run_id, index, attempt, elapsed)
    else:
        log.info("run %s chunk %s was stored first by another delivery", run_id, index)
    return True


def _mark_running(core: Core, run_id: str, index: int, node: str | None) -> int | None:
    """Count an attempt on ``node``: its number, or None when the chunk is not to run."""
    max_attempts = core.settings.chunk_max_attempts
    now = utcnow()
    with core.transaction() as session:
        # The usual case in one statement: the run is going, the chunk not stored yet and
        # within its attempts. Anything else is sorted out below.
        attempt = session.scalar(
            update(RunChunk)
            .where(
                RunChunk.run_id == run_id,
                RunChunk.chunk_index == index,
                RunChunk.status != SUCCEEDED,
                RunChunk.attempts < max_attempts,
                select(Run.id).where(Run.id == run_id, Run.status == RUNNING).exists(),
            )
            .values(status=RUNNING, attempts=RunChunk.attempts + 1, started_at=now, node=node)
            .returning(RunChunk.attempts)
            .execution_options(synchronize_session=False)
        )
        if attempt is not None:
            return attempt
        run_status = session.scalar(select(Run.status).where(Run.id == run_id))
        stored = session.get(RunChunk, (run_id, index))
        if run_status != RUNNING:
            state = run_status or "gone"
            log.info("run %s chunk %s not started: the run is %s", run_id, index, state)
            return None
        if stored is not None and stored.status == SUCCEEDED:
            log.info("run %s chunk %s already stored: nothing to do", run_id, index)
            return None
        if stored is None:  # planned before chunk rows were stored with the plan
            insert_ignoring_duplicates(
                session, RunChunk, {"run_id": run_id, "chunk_index": index, "status": PENDING}
            )
            stored = session.get(RunChunk, (run_id, index), with_for_update=True)
            assert stored is not None
            if stored.status == SUCCEEDED:
                return None
        attempts = stored.attempts
        if attempts < max_attempts:
            stored.status, stored.attempts = RUNNING, attempts + 1
            stored.started_at, stored.node = now, node
            return attempts + 1
    # Each start so far ended with its process or node gone (a redelivery): stop here.
    give_up_chunk(
        core,
        run_id,
        index,
        f"started {attempts} times without finishing: its worker process or node was lost"
        f" each time (limit BATCH_CHUNK_MAX_ATTEMPTS={max_attempts})",
    )
    return None


def give_up_chunk(core: Core, run_id: str, index: int, reason: str) -> None:
    """Fail a chunk that ran out of attempts with ``reason``, and so its run."""
    with core.transaction() as session:
        session.execute(
            update(RunChunk)
            .where(RunChunk.run_id == run_id, RunChunk.chunk_index == index)
            .values(status=FAILED, error=reason, traceback=None, finished_at=utcnow())
        )
    log.error("run %s chunk %s: %s", run_id, index, reason)
    fail_run(core, run_id, f"chunk {index}: {reason}")


def _chunk_stored(session: Session, run_id: str, index: int) -> bool:
    # FOR UPDATE makes a concurrent duplicate wait here on PostgreSQL; SQLite's
    # writing transactions are already serialized.
    status = session.scalar(
        select(RunChunk.status)
        .where(RunChunk.run_id == run_id, RunChunk.chunk_index == index)
        .with_for_update()
    )
    return status == SUCCEEDED


def _store_partial(core: Core, session: Session, run_id: str, index: int, partial: Partial) -> bool:
    """Store the chunk's partial and, when it was the run's last, aggregate (one commit)."""
    # The first stored partial wins: a duplicate that computed the same chunk changes nothing.
    stored = session.execute(
        update(RunChunk)
        .where(
            RunChunk.run_id == run_id,
            RunChunk.chunk_index == index,
            RunChunk.status != SUCCEEDED,
        )
        .values(status=SUCCEEDED, partial=partial, error=None, traceback=None, finished_at=utcnow())
    )
    if stored.rowcount != 1:
        return False
    _finish_if_complete(core, session, run_id)
    return True


def stopping_cause(exc: BaseException) -> BaseException | None:
    """The SystemExit or KeyboardInterrupt that ``exc`` was raised while handling, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, SystemExit | KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _record_chunk_error(
    core: Core, run_id: str, index: int, exc: Exception, *, attempt: int
) -> None:
    error = describe_error(exc)
    log.error("run %s chunk %s failed on attempt %s: %s", run_id, index, attempt, error)
    # Best effort: when the database itself is the failure, the retry will record it.
    try:
        with core.transaction() as session:
            session.execute(
                update(RunChunk)
                .where(RunChunk.run_id == run_id, RunChunk.chunk_index == index)
                .values(
                    status=FAILED,
                    error=error,
                    traceback=format_traceback(exc),
                    finished_at=utcnow(),
                )
            )
    except Exception:
        log.exception("could not record the error of chunk %s of run %s", index, run_id)


def finish_run(core: Core, run_id: str) -> None:
    """Aggregate the stored partials into the result.

    Raises MissingChunks while a partial is absent (the caller retries), and fails the run
    once it has waited ``finish_deadline_seconds`` since it started.
    """
    try:
        _aggregate(core, run_id)
    except MissingChunks as exc:
        with core.reading() as session:
            started = queries.find_run(session, run_id).started_at or utcnow()
        waited = utcnow() - started
        if waited > timedelta(seconds=core.settings.finish_deadline_seconds):
            fail_run(core, run_id, f"gave up waiting for chunks: {exc}")
            return
        raise


def _aggregate(core: Core, run_id: str) -> None:
    with core.transaction() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        if run.status != RUNNING:
            return  # already aggregated (by the chunk that stored the last partial), or ended
        partials = _stored_partials(session, run_id)
        if len(partials) < (run.chunk_count or 0):
            raise MissingChunks(f"{len(partials)} of {run.chunk_count} chunks stored")
        _reduce_into_result(core, session, run_id, run.job, partials)


def _finish_if_complete(core: Core, session: Session, run_id: str) -> None:
    """In the transaction that stored a partial: aggregate when it completed the run's set.

    The run then finishes one message hop before the chord callback would; the callback
    finds it finished. Two chunks committing at the same moment on PostgreSQL may each miss
    the other's partial: then the callback aggregates, as it always could.
    """
    stored = (
        select(func.count())
        .where(RunChunk.run_id == run_id, RunChunk.status == SUCCEEDED)
        .scalar_subquery()
    )
    row = session.execute(
        select(Run.job, Run.chunk_count, stored).where(Run.id == run_id, Run.status == RUNNING)
    ).one_or_none()
    if row is None or row[1] is None or row[2] < row[1]:
        return
    _reduce_into_result(core, session, run_id, row[0], _stored_partials(session, run_id))


def _stored_partials(session: Session, run_id: str) -> list[Partial]:
    return list(
        session.scalars(
            select(RunChunk.partial)
            .where(RunChunk.run_id == run_id, RunChunk.status == SUCCEEDED)
            .order_by(RunChunk.chunk_index)
        )
    )


def _reduce_into_result(
    core: Core, session: Session, run_id: str, job: str, partials: list[Partial]
) -> None:
    # The job's reduce fails the same way each time: that is the run's outcome, not a retry.
    try:
        result = core.jobs.get(job).reduce(partials)
    except Exception as exc:
        log.exception("run %s: aggregating its partials failed", run_id)
        finish(session, run_id, FAILED, error=f"aggregating failed: {describe_error(exc)}")
        return
    finish(session, run_id, SUCCEEDED, result=result)


def fail_run(core: Core, run_id: str, error: str) -> None:
    """Mark an unfinished run failed with ``error``, naming its unfinished chunks if any."""
    with core.transaction() as session:
        unfinished = session.execute(
            select(RunChunk.chunk_index, RunChunk.status, RunChunk.error)
            .where(RunChunk.run_id == run_id, RunChunk.status.in_((FAILED, RUNNING)))
            .order_by(RunChunk.chunk_index)
        ).all()
        failed = [row for row in unfinished if row.status == FAILED]
        unfinished = failed or unfinished  # the chunks that failed say why; else who hung
        if unfinished:
            error = "; ".join(
                f"chunk {index}: {message}"
                if status == FAILED
                else f"chunk {index}: did not finish (time limit or lost worker)"
                for index, status, message in unfinished
            )
        finish(session, run_id, FAILED, error=error)


def _planning_error(exc: Exception) -> str:
    if isinstance(exc, UnknownJob):
        # The sender knew the job, this worker does not: it started before the job was added.
        return (
            f"{exc} on this worker: workers load jobs when they start, "
            "so restart them after adding a job"
        )
    return describe_error(exc)


def describe_error(exc: BaseException) -> str:
    """The exception's one-line description: ``ValueError: message``."""
    return "".join(traceback.format_exception_only(exc)).strip()


def format_traceback(exc: BaseException) -> str:
    """The exception's traceback, chained causes included, within MAX_TRACEBACK_CHARS."""
    return cut_middle("".join(traceback.format_exception(exc)), MAX_TRACEBACK_CHARS)


def cut_middle(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and tail around a marker.

    The head is the first quarter of ``limit``; the tail fills the rest. Both are cut at
    line ends where there are any, so no frame line is shown in half.
    """
    if len(text) <= limit:
        return text
    head = text[: limit // 4]
    head = head[: head.rfind("\n") + 1] or head
    tail = text[len(text) - (limit - len(head) - _CUT_MARKER_ROOM) :]
    line_end = tail.find("\n")
    if 0 <= line_end < len(tail) - 1:
        tail = tail[line_end + 1 :]
    cut = len(text) - len(head) - len(tail)
    separator = "" if head.endswith("\n") else "\n"
    return f"{head}{separator}[... {cut} characters cut ...]\n{tail}"


def run_summary(session: Session, run: Run) -> dict[str, Any]:
    """The JSON view of a run shared by the CLI and the API."""
    return {
        "run_id": run.id,
        "job": run.job,
        "status": run.status,
        "trigger": run.trigger,
        "schedule": run.schedule_name,
        "scheduled_for": run.scheduled_for.isoformat() if run.scheduled_for else None,
        "params": run.params,
        "chunks_done": queries.run_progress(session, [run.id])[run.id].done,
        "chunks_total": run.chunk_count,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "result": run.result,
        "error": run.error,
        "chunks": [_chunk_summary(chunk) for chunk in queries.run_chunks(session, run.id)],
    }


def _chunk_summary(chunk: queries.ChunkItem) -> dict[str, Any]:
    # The same keys for every chunk; spec and traceback only where an operator needs them.
    failed = chunk.status == FAILED
    return {
        "index": chunk.index,
        "status": chunk.status,
        "attempts": chunk.attempts,
        "node": chunk.node,
        "started_at": chunk.started_at.isoformat() if chunk.started_at else None,
        "finished_at": chunk.finished_at.isoformat() if chunk.finished_at else None,
        "error": chunk.error,
        "spec": chunk.spec if failed else None,
        "traceback": chunk.traceback if failed else None,
    }
