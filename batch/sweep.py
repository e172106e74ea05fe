"""The recovery sweep: SQL moves on every run that stopped moving.

Celery's chord is the fast path. Its counter and the messages in flight live in the broker and
in Redis, and a lost worker node, a flush or a restart of Redis lose them. Every few seconds
the sweep reads the runs still going from SQL and moves on those that stopped:

- a queued run whose start message was lost: its start is sent again;
- a fire whose start message a worker took and never started (its node is gone), which has
  no run in SQL yet: recorded as a queued run and sent again (Redis broker; RabbitMQ gives a
  lost connection's messages back by itself);
- a chunk whose message was lost, or whose worker node is gone: sent again from its stored
  spec, until it has used ``BATCH_CHUNK_MAX_ATTEMPTS`` sends; then the run fails, naming it;
- a run whose chunks are all stored but which did not finish (the chord was lost): finished;
- a run with a chunk that failed for good but which was not marked failed: failed.

A message counts as lost when it was sent before the Redis that carried it lost its data
(the epoch key below is younger than the send), or when it waited ``BATCH_STALL_SECONDS``
while its queue is empty (then no queue holds it, and with one message reserved per worker
process, no live worker holds it unstarted either). Sending again is always safe: a partial
is stored once per ``(run_id, chunk_index)``, and a run is claimed once.

Every worker node runs a sweeper thread; a Redis lock lets one of them work at a time. The
same pass judges the schedules' deadlines (batch/deadlines.py) and watches beat, the workers
and the queues (batch/watchdog.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from celery import Celery
from sqlalchemy import func, select

from batch import capacity, deadlines, queries, redis_broker, runs
from batch.constants import REDIS_EPOCH_KEY, SWEEP_LOCK_KEY, TASK_START_RUN
from batch.core import Core
from batch.db import utcnow
from batch.models import FAILED, PENDING, QUEUED, RUNNING, SUCCEEDED, Run, RunChunk
from batch.node_lock import LockedLoop, NodeLoopStep
from batch.watchdog import Watchdog

log = logging.getLogger(__name__)

#: Runs read per pass, oldest first; the rest wait for the next pass.
MAX_RUNS_PER_PASS = 500
#: A failed chunk may still be retried by Celery (transient errors back off up to 60 s).
FAILED_CHUNK_GRACE = timedelta(seconds=90)


@dataclass
class SweepResult:
    """What one pass did, by action."""

    starts_sent: list[str] = field(default_factory=list)
    chunks_sent: list[tuple[str, int]] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.starts_sent or self.chunks_sent or self.finished or self.failed)


def redis_epoch(client: redis.Redis, now: datetime) -> datetime:
    """When this Redis's data began, as far as batch knows: set to ``now`` when missing."""
    client.set(REDIS_EPOCH_KEY, now.isoformat(), nx=True)
    return datetime.fromisoformat(client.get(REDIS_EPOCH_KEY) or now.isoformat())


@dataclass
class _Pass:
    """What one pass knows about the world outside SQL."""

    core: Core
    celery: Celery
    now: datetime
    #: Messages sent before this on a Redis broker are gone; None on another broker.
    broker_lost_before: datetime | None
    #: Live nodes: hostname -> when that node started (None when it does not say).
    nodes: dict[str, datetime | None]
    #: False just after Redis lost its data: the live nodes have not announced again yet.
    nodes_known: bool
    _idle: dict[str, bool] = field(default_factory=dict)
    _oldest: dict[str, datetime | None] = field(default_factory=dict)

    def lost(self, queue: str, sent_at: datetime | None) -> bool:
        """Whether a message sent to ``queue`` at ``sent_at`` can no longer arrive."""
        if sent_at is not None and self.broker_lost_before is not None:
            if sent_at < self.broker_lost_before:
                return True
        stall = timedelta(seconds=self.core.settings.stall_seconds)
        waited = sent_at is None or self.now - sent_at > stall
        return waited and (self.queue_idle(queue) or self.consumed(queue, sent_at))

    def consumed(self, queue: str, sent_at: datetime | None) -> bool:
        """Whether a message sent at ``sent_at`` left ``queue``: the oldest one still waiting
        there was sent after it (Redis broker only; each list of a queue is first in, first
        out). Taken and not started for a stall, it is held by a node that is gone."""
        if sent_at is None or self.broker_lost_before is None:
            return False
        if queue not in self._oldest:
            self._oldest[queue] = redis_broker.oldest_waiting(self.core.redis, queue)
        oldest = self._oldest[queue]
        return oldest is not None and sent_at < oldest

    def queue_idle(self, queue: str) -> bool:
        if queue not in self._idle:
            length = queries.broker_queue_lengths(self.celery, [queue])[queue]
            self._idle[queue] = length == 0 or length == queries.NOT_AVAILABLE
        return self._idle[queue]


def sweep(core: Core, celery: Celery, *, now: datetime | None = None) -> SweepResult:
    """One pass over the going runs (see the module docstring); returns what it did."""
    now = now or utcnow()
    settings = core.settings
    epoch = redis_epoch(core.redis, now)
    on_redis_broker = settings.effective_broker_url == settings.redis_url
    state = _Pass(
        core=core,
        celery=celery,
        now=now,
        broker_lost_before=epoch if on_redis_broker else None,
        nodes=_node_starts(capacity.online_workers(core.redis)),
        nodes_known=now - epoch > timedelta(seconds=settings.worker_ttl_seconds),
    )
    result = SweepResult()
    if on_redis_broker:
        _restart_held_fires(state, result)
    going, unfinished, stored = _read_going(core)
    for run in going:
        if run.status == QUEUED:
            if state.lost(run.queue, run.sent_at) and runs.send_start_again(core, celery, run):
                log.warning("recovery: run %s: its start message was lost: sent again", run.id)
                result.starts_sent.append(run.id)
            continue
        _move_running(state, run, unfinished.get(run.id, []), stored.get(run.id, 0), result)
    return result


def _restart_held_fires(state: _Pass, result: SweepResult) -> None:
    # A fire lives only in its start message until start_run commits its run. Taken by a
    # node that is gone, it waits in kombu's unacknowledged messages for the visibility
    # timeout (an hour). Taken a stall ago and no run yet: recorded in SQL and sent again.
    core = state.core
    before = state.now - timedelta(seconds=core.settings.stall_seconds)
    for message in redis_broker.taken_before(core.redis, before, task=TASK_START_RUN):
        if message.eta is not None and message.eta > before:
            continue  # a retry counting down on a live worker
        run_id = runs.restart_held_fire(
            core, state.celery, message.kwargs, queue=message.queue, priority=message.priority
        )
        if run_id is not None:
            log.warning(
                "recovery: run %s: the start message of schedule %s's fire at %s was taken at"
                " %s and never started (its worker node is gone): recorded and sent again",
                run_id, message.kwargs["schedule"], message.kwargs["scheduled_for"],
                message.taken_at.isoformat(timespec="seconds"),
            )  # fmt: skip
            result.starts_sent.append(run_id)


def _read_going(core: Core) -> tuple[list[Run], dict[str, list[RunChunk]], dict[str, int]]:
    with core.reading() as session:
        going = list(
            session.scalars(
                select(Run)
                .where(Run.status.in_((QUEUED, RUNNING)))
                .order_by(Run.created_at)
                .limit(MAX_RUNS_PER_PASS)
            )
        )
        ids = [run.id for run in going if run.status == RUNNING]
        unfinished: dict[str, list[RunChunk]] = {}
        stored: dict[str, int] = {}
        if ids:
            for chunk in session.scalars(
                select(RunChunk)
                .where(RunChunk.run_id.in_(ids), RunChunk.status != SUCCEEDED)
                .order_by(RunChunk.run_id, RunChunk.chunk_index)
            ):
                unfinished.setdefault(chunk.run_id, []).append(chunk)
            stored = dict(
                session.execute(
                    select(RunChunk.run_id, func.count())
                    .where(RunChunk.run_id.in_(ids), RunChunk.status == SUCCEEDED)
                    .group_by(RunChunk.run_id)
                ).all()
            )
    return going, unfinished, stored


def _move_running(
    state: _Pass, run: Run, unfinished: list[RunChunk], stored: int, result: SweepResult
) -> None:
    core = state.core
    if run.chunk_count is not None and stored >= run.chunk_count and not unfinished:
        _finish(core, run, result)
        return
    for chunk in unfinished:
        if chunk.status == FAILED:
            if chunk.finished_at is None or state.now - chunk.finished_at > FAILED_CHUNK_GRACE:
                runs.fail_run(core, run.id, f"chunk {chunk.chunk_index} failed")
                log.warning("recovery: run %s failed: chunk %s failed", run.id, chunk.chunk_index)
                result.failed.append(run.id)
                return
            continue
        why = _why_lost(state, run, chunk)
        if why is None:
            continue
        if chunk.sends >= core.settings.chunk_max_attempts:
            runs.give_up_chunk(
                core, run.id, chunk.chunk_index,
                f"sent {chunk.sends} times and lost each time (last: {why}; limit"
                f" BATCH_CHUNK_MAX_ATTEMPTS={core.settings.chunk_max_attempts})",
            )  # fmt: skip
            result.failed.append(run.id)
            return
        if runs.send_chunk_again(core, state.celery, run, chunk):
            log.warning("recovery: run %s chunk %s: %s: sent again", run.id, chunk.chunk_index, why)
            result.chunks_sent.append((run.id, chunk.chunk_index))


def _node_starts(nodes: dict[str, dict[str, Any]]) -> dict[str, datetime | None]:
    since = {name: info.get("since") for name, info in nodes.items()}
    return {name: datetime.fromisoformat(at) if at else None for name, at in since.items()}


def _why_lost(state: _Pass, run: Run, chunk: RunChunk) -> str | None:
    """Why this chunk will not finish by itself, or None when it still may."""
    if chunk.status == RUNNING:
        if chunk.node is None or not state.nodes_known:
            return None
        if chunk.node not in state.nodes:
            return f"its worker node {chunk.node} is gone"
        since = state.nodes[chunk.node]
        if since is not None and chunk.started_at is not None and chunk.started_at < since:
            return f"its worker node {chunk.node} restarted since it began"
        return None
    if chunk.status == PENDING and state.lost(run.queue, chunk.sent_at):
        return "its message was lost"
    return None


def _finish(core: Core, run: Run, result: SweepResult) -> None:
    try:
        runs.finish_run(core, run.id)
    except runs.MissingChunks:
        return  # a chunk was stored as not done meanwhile: the next pass looks again
    log.warning("recovery: run %s: every chunk stored, the chord was lost: aggregated", run.id)
    result.finished.append(run.id)


class Sweeper(LockedLoop):
    """The sweep loop of one worker node: one pass every interval while it holds the lock."""

    name = "recovery sweep"

    def __init__(self, core: Core, celery: Celery) -> None:
        interval = core.settings.sweep_interval_seconds
        super().__init__(
            core.redis, SWEEP_LOCK_KEY, timeout=max(3 * interval, 10), interval=interval
        )
        self.core, self.celery = core, celery
        self.deadlines = deadlines.DeadlineWatch()
        self.watchdog = Watchdog()
        self._last_problem = ""

    def run_once(self) -> SweepResult | None:
        """One pass if this node holds the sweep lock; None when another node sweeps."""
        result: SweepResult | None = super().run_once()
        return result

    def work(self) -> SweepResult:
        """Sweep, then judge the deadlines and watch beat, the workers and the queues."""
        result = sweep(self.core, self.celery)
        now = utcnow()
        self.deadlines.check(self.core, now)
        self.watchdog.check(self.core, self.celery, now)
        self._problem("")
        return result

    def service_away(self, exc: BaseException) -> None:
        self._problem(f"recovery sweep skipped: {runs.describe_error(exc)}")

    def _problem(self, message: str) -> None:
        # One line when a service goes away and one when it is back, not one per pass.
        if message and message != self._last_problem:
            log.warning("%s", message)
        elif not message and self._last_problem:
            log.info("recovery sweep running again")
        self._last_problem = message


class RecoverySweep(NodeLoopStep):
    """Worker bootstep: runs a Sweeper in a thread, on its own connections."""

    thread_name = "batch-sweep"

    def make_loop(self, worker: Any) -> Sweeper | None:
        from batch.celery_app import create_celery

        settings = worker.app.batch_core.settings
        if settings.sweep_interval_seconds <= 0:
            return None
        # Its own app, core and connections: the pool's processes never share them.
        celery = create_celery(settings)
        return Sweeper(celery.batch_core, celery)
