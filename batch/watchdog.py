"""The watchdog: system alerts, raised while a condition holds and resolved when it clears.

- ``beat_silent``: schedules are enabled and beat has not reported a tick for
  ``BATCH_BEAT_SILENT_SECONDS`` (batch/health.py). Watched by the worker nodes' sweep.
- ``no_worker``: no worker node is online on a queue where a schedule's fire is due (or
  comes within ``DUE_HORIZON``), for ``BATCH_NO_WORKER_ALERT_SECONDS``. Watched by beat too:
  with every worker gone, no sweep runs.
- ``queue_backlog``: the oldest message waiting in a queue has waited longer than
  ``BATCH_QUEUE_AGE_ALERT_SECONDS`` (Redis broker; RabbitMQ does not tell a message's age).

A condition's alert is ``<kind>:<subject>:<since>`` (the subject is ``beat`` or a queue):
one per episode, raised once whoever sees it first, and resolved (with a ``resolved`` event
for the webhooks) by the first check that finds the condition gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from sqlalchemy import exists, or_, select

from batch import alerts, capacity, health, redis_broker
from batch.core import Core
from batch.models import Alert, Schedule
from batch.times import show_utc

log = logging.getLogger(__name__)

BEAT_SILENT, NO_WORKER, QUEUE_BACKLOG = "beat_silent", "no_worker", "queue_backlog"
#: A schedule due within this long needs a worker on its queue now.
DUE_HORIZON = timedelta(minutes=5)


@dataclass(frozen=True)
class Condition:
    """A system condition found holding: its kind, subject, since when, and what to say."""

    kind: str
    subject: str
    since: datetime
    message: str

    @property
    def cause(self) -> str:
        return f"{self.kind}:{self.subject}:{self.since.isoformat()}"


@dataclass
class Watchdog:
    """Checks the system's conditions; one per watching process (sweeper, beat)."""

    #: Whether beat's ticks are watched (not by beat itself).
    watch_beat: bool = True
    #: (kind, subject) -> when this process first saw the condition, while it holds.
    _first_seen: dict[tuple[str, str], datetime] = field(default_factory=dict)
    _seen_now: set[tuple[str, str]] = field(default_factory=set)

    def check(self, core: Core, celery: Celery, now: datetime) -> list[str]:
        """Raise alerts for the conditions that hold, resolve those that cleared; the ids of
        the alerts raised."""
        settings = core.settings
        self._seen_now = set()
        kinds = [NO_WORKER]
        holding = self._no_worker(core, celery, now)
        if self.watch_beat:
            kinds.append(BEAT_SILENT)
            holding += self._beat_silent(core, now)
        on_redis_broker = settings.effective_broker_url == settings.redis_url
        if on_redis_broker and settings.queue_age_alert_seconds > 0:
            kinds.append(QUEUE_BACKLOG)
            holding += _backlog(core, now)
        # Forget the conditions not seen in this check: when they come back, they start anew.
        seen = self._seen_now
        self._first_seen = {key: at for key, at in self._first_seen.items() if key in seen}
        return _apply(core, kinds, holding)

    def _seen_since(self, kind: str, subject: str, now: datetime) -> datetime:
        """When this watch first saw the condition, in an unbroken line of checks."""
        self._seen_now.add((kind, subject))
        return self._first_seen.setdefault((kind, subject), now)

    def _beat_silent(self, core: Core, now: datetime) -> list[Condition]:
        silent = timedelta(seconds=core.settings.beat_silent_seconds)
        ticked = health.read(core.redis).ticked_at
        if ticked is not None and now - ticked <= silent:
            return []
        with core.reading() as session:
            if not session.scalar(select(exists().where(Schedule.enabled))):
                return []  # nothing to fire: a beat not running misses nothing
        since = ticked if ticked is not None else self._seen_since(BEAT_SILENT, "beat", now)
        if now - since <= silent:
            return []
        last = f"since {show_utc(ticked)}" if ticked else "in this watch (none recorded)"
        message = (
            f"beat has not ticked {last}: no schedule fires"
            f" (BATCH_BEAT_SILENT_SECONDS={core.settings.beat_silent_seconds})"
        )
        return [Condition(BEAT_SILENT, "beat", since, message)]

    def _no_worker(self, core: Core, celery: Celery, now: datetime) -> list[Condition]:
        served = {
            q for node in capacity.online_workers(core.redis).values() for q in node["queues"]
        }
        unserved = [queue for queue in core.settings.queues if queue not in served]
        wait = timedelta(seconds=core.settings.no_worker_alert_seconds)
        found = []
        for queue in unserved:
            due = _first_due(core, celery, queue)
            if due is None or due[1] > now + DUE_HORIZON:
                continue
            since = self._seen_since(NO_WORKER, queue, now)
            if now - since < wait:
                continue
            name, at = due
            when = "was due at" if at <= now else "fires at"
            message = (
                f"no worker is online for queue {queue}; schedule {name} {when} {show_utc(at)}"
            )
            found.append(Condition(NO_WORKER, queue, since, message))
        return found


def _first_due(core: Core, celery: Celery, queue: str) -> tuple[str, datetime] | None:
    """The enabled schedule on ``queue`` that fires first, and when (RedBeat's own times)."""
    jobs = [job.name for job in core.jobs if job.queue == queue]
    on_queue = or_(Schedule.queue == queue, Schedule.queue.is_(None) & Schedule.job.in_(jobs))
    with core.reading() as session:
        names = list(session.scalars(select(Schedule.name).where(Schedule.enabled, on_queue)))
    if not names:
        return None
    conf: Any = celery.redbeat_conf
    with core.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zscore(conf.schedule_key, conf.key_prefix + name)
        scores = pipe.execute()
    due = [(score, name) for name, score in zip(names, scores, strict=True) if score is not None]
    if not due:
        return None
    score, name = min(due)
    return name, datetime.fromtimestamp(score, tz=UTC)


def _backlog(core: Core, now: datetime) -> list[Condition]:
    limit = timedelta(seconds=core.settings.queue_age_alert_seconds)
    found = []
    for queue in core.settings.queues:
        oldest = redis_broker.oldest_waiting(core.redis, queue)
        if oldest is None or now - oldest <= limit:
            continue
        waited = int((now - oldest).total_seconds())
        message = (
            f"the oldest message in queue {queue} has waited {waited}s, sent at"
            f" {show_utc(oldest)} (BATCH_QUEUE_AGE_ALERT_SECONDS="
            f"{core.settings.queue_age_alert_seconds})"
        )
        found.append(Condition(QUEUE_BACKLOG, queue, oldest + limit, message))
    return found


def _apply(core: Core, kinds: list[str], holding: list[Condition]) -> list[str]:
    """Raise what holds and has no open alert; resolve the open alerts that no longer hold."""
    raised = []
    with core.transaction() as session:
        open_ids = session.scalars(
            select(Alert.id).where(Alert.resolved_at.is_(None), Alert.kind.in_(kinds))
        ).all()
        open_by_subject = {tuple(alert_id.split(":", 2)[:2]): alert_id for alert_id in open_ids}
        held = {(c.kind, c.subject) for c in holding}
        cleared = [alert_id for key, alert_id in open_by_subject.items() if key not in held]
        if cleared:
            alerts.resolve(session, Alert.id.in_(cleared))
        for condition in holding:
            if (condition.kind, condition.subject) in open_by_subject:
                continue
            if alerts.raise_alert(session, condition.cause, condition.kind, condition.message):
                raised.append(condition.cause)
    for cause in raised:
        log.warning("alert %s raised", cause)
    return raised
