"""``/metrics`` for Prometheus: what SQL and Redis say at the moment of the scrape.

Counters and histograms come from ``batch.run_stats`` (totals kept in SQL with each run);
gauges are read at the scrape: runs going, open alerts, each schedule's next fire (RedBeat's
zset), queue depth and oldest message age, workers online, beat's last tick and reconcile.
When Redis or the broker does not answer, their metrics are left out and ``batch_redis_up``
or ``batch_broker_up`` says 0; the scrape still answers. docs/operations.md lists them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batch import capacity, health, queries, redis_broker, run_stats
from batch.core import Core
from batch.db import utcnow
from batch.models import GOING_STATES, Alert, Backfill, Run, Schedule
from batch.run_stats import DURATION, LAST_FIRE, LAST_SUCCESS, LATENESS, RUNS, Totals

log = logging.getLogger(__name__)
T = TypeVar("T")

RUN_LABELS = ["schedule", "batch_job"]


def render(core: Core, celery: Celery) -> bytes:
    """The metrics in Prometheus's text format (``prometheus_client.CONTENT_TYPE_LATEST``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BatchCollector(core, celery))
    return generate_latest(registry)


class BatchCollector(Collector):
    """Reads every metric afresh at each scrape."""

    def __init__(self, core: Core, celery: Celery) -> None:
        self.core, self.celery = core, celery

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        with self.core.reading() as session:
            schedules = _schedules(self.core, session)
            names = {row.name for row in schedules}
            yield from _schedule_metrics(session, schedules)
            yield from _run_metrics(session, names, self.core.settings.metrics_histograms)
        state = _down_or(lambda: _read_redis(self.core, self.celery))
        yield _gauge(
            "batch_redis_up", "1 if Redis answered this scrape, else 0.", value=int(bool(state))
        )
        settings = self.core.settings
        if state is not None:
            prefix = self.celery.redbeat_conf.key_prefix  # type: ignore[attr-defined]
            yield from _redis_metrics(state, prefix, names, settings.queues)
        broker_is_redis = settings.effective_broker_url == settings.redis_url
        # Redis that did not answer is not asked again as the broker: one timeout a scrape.
        yield from _broker_metrics(self.core, self.celery, ask=bool(state) or not broker_is_redis)
        yield _gauge(
            "batch_scrape_duration_seconds",
            "How long reading these metrics took.",
            value=time.monotonic() - started,
        )


def _gauge(
    name: str, doc: str, *, value: float | None = None, labels: list[str] | None = None
) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, labels=labels)


def _down_or(read: Callable[[], T]) -> T | None:
    return queries.unless_down(read, reader="metrics")


@dataclass(frozen=True)
class ScheduleRow:
    """A schedule as the metrics show it."""

    name: str
    job: str
    #: Its own queue, else its job's (else the default queue).
    queue: str
    enabled: bool
    paused: bool


def _schedules(core: Core, session: Session) -> list[ScheduleRow]:
    job_queues = {job.name: job.queue for job in core.jobs}
    default = core.settings.default_queue
    columns = (
        Schedule.name,
        Schedule.job,
        Schedule.queue,
        Schedule.enabled,
        Schedule.paused_reason,
    )
    return [
        ScheduleRow(name, job, queue or job_queues.get(job, default), enabled, bool(paused))
        for name, job, queue, enabled, paused in session.execute(select(*columns))
    ]


def _schedule_metrics(session: Session, schedules: list[ScheduleRow]) -> Iterator[Metric]:
    info = _gauge(
        "batch_schedule_info",
        "A schedule (always 1): its job and the queue its fires go to.",
        labels=["schedule", "batch_job", "queue"],
    )
    enabled = _gauge(
        "batch_schedule_enabled",
        "1 if the schedule fires, 0 if it is disabled or paused.",
        labels=["schedule"],
    )
    paused = _gauge(
        "batch_schedule_paused",
        "1 if the schedule paused itself after consecutive failures.",
        labels=["schedule"],
    )
    for row in schedules:
        info.add_metric([row.name, row.job, row.queue], 1)
        enabled.add_metric([row.name], int(row.enabled))
        paused.add_metric([row.name], int(row.paused))
    yield from (info, enabled, paused)
    going = _gauge(
        "batch_runs_going",
        "Runs not ended, by status (queued, waiting, running); schedule is empty for a run"
        " of no schedule.",
        labels=[*RUN_LABELS, "status"],
    )
    rows = session.execute(
        select(Run.schedule_name, Run.job, Run.status, func.count())
        .where(Run.status.in_(GOING_STATES))
        .group_by(Run.schedule_name, Run.job, Run.status)
    )
    for schedule, job, status, runs in rows:
        going.add_metric([schedule or "", job, status], runs)
    yield going
    alerts = _gauge(
        "batch_alerts_open", "Alerts raised and not resolved, by kind.", labels=["kind"]
    )
    rows = session.execute(
        select(Alert.kind, func.count()).where(Alert.resolved_at.is_(None)).group_by(Alert.kind)
    )
    for kind, count in rows:
        alerts.add_metric([kind], count)
    yield alerts
    yield _gauge(
        "batch_backfills_running",
        "Backfills still making or watching their runs.",
        value=session.scalar(
            select(func.count()).select_from(Backfill).where(Backfill.state == "running")
        ),
    )


def _run_metrics(session: Session, schedules: set[str], histograms: str) -> Iterator[Metric]:
    runs = CounterMetricFamily(
        "batch_runs",
        "Runs ended, by final status (a retried run counts each time it ends).",
        labels=[*RUN_LABELS, "status"],
    )
    skips = CounterMetricFamily(
        "batch_skips",
        "Fires skipped, by reason: disabled, missed (catch_up = skip), deadline, overlap.",
        labels=[*RUN_LABELS, "reason"],
    )
    last_fire: dict[str, float] = {}
    last_success: dict[str, float] = {}
    # A deleted schedule's totals stay in SQL, and leave /metrics.
    live = [
        (key, totals)
        for key, totals in sorted(run_stats.read(session).items())
        if not key.schedule or key.schedule in schedules
    ]
    for key, totals in live:
        labels = [key.schedule, key.job]
        for (series, label), value in sorted(totals.counts.items()):
            (runs if series == RUNS else skips).add_metric([*labels, label], value)
        for moments, series in ((last_fire, LAST_FIRE), (last_success, LAST_SUCCESS)):
            if key.schedule and series in totals.moments:
                at = totals.moments[series]
                moments[key.schedule] = max(at, moments.get(key.schedule, at))
    yield from (runs, skips)
    if histograms == "schedule":
        yield from _histograms({(k.schedule, k.job): t for k, t in live}, RUN_LABELS)
    elif histograms == "job":
        by_job = run_stats.histograms_by_job(session)
        yield from _histograms({(job,): t for job, t in by_job.items()}, ["batch_job"])
    yield _by_schedule(
        "batch_schedule_last_fire_timestamp_seconds",
        "The fire time of the schedule's latest fire that reached a worker.",
        last_fire.items(),
    )
    yield _by_schedule(
        "batch_schedule_last_success_timestamp_seconds",
        "When the schedule's latest successful run (not a backfill's) ended.",
        last_success.items(),
    )


def _histograms(groups: dict[tuple[str, ...], Totals], labels: list[str]) -> Iterator[Metric]:
    """Fire lateness and run duration, one histogram per group (of ``labels``' values)."""
    for name, series, doc in (
        ("batch_fire_lateness_seconds", LATENESS,
         "From a fire's time to its run's start on a worker (fires that started)."),
        ("batch_run_duration_seconds", DURATION,
         "From a run's start to its end, for runs that succeeded or failed."),
    ):  # fmt: skip
        family = HistogramMetricFamily(name, doc, labels=labels)
        for group, totals in groups.items():
            if series in totals.buckets:
                buckets = [(floatToGoString(float(le)), n) for le, n in totals.cumulative(series)]
                family.add_metric(list(group), buckets, totals.sums.get(series, 0))
        yield family


def _by_schedule(name: str, doc: str, values: Iterable[tuple[str, float]]) -> Metric:
    family = _gauge(name, doc, labels=["schedule"])
    for schedule, value in values:
        family.add_metric([schedule], value)
    return family


@dataclass(frozen=True)
class RedisState:
    """What a scrape reads from Redis, in one go."""

    #: (RedBeat entry key, due time) for every entry in RedBeat's sorted set.
    due: list[tuple[Any, float]]
    workers: dict[str, dict[str, Any]]
    beat: health.BeatHealth


def _read_redis(core: Core, celery: Celery) -> RedisState:
    conf: Any = celery.redbeat_conf
    return RedisState(
        due=core.redis.zrange(conf.schedule_key, 0, -1, withscores=True),
        workers=capacity.online_workers(core.redis),
        beat=health.read(core.redis),
    )


def _redis_metrics(
    state: RedisState, key_prefix: str, schedules: Iterable[str], queues: Iterable[str]
) -> Iterator[Metric]:
    """Next fires, workers online, beat's health."""
    known = set(schedules)
    names = ((queries.as_text(key).removeprefix(key_prefix), score) for key, score in state.due)
    yield _by_schedule(
        "batch_schedule_next_fire_timestamp_seconds",
        "When beat fires the schedule next (RedBeat's due time; enabled schedules only).",
        sorted((name, score) for name, score in names if name in known),
    )
    workers = state.workers
    yield _gauge("batch_workers_online", "Worker nodes online.", value=len(workers))
    per_queue = _gauge(
        "batch_queue_workers_online",
        "Worker nodes online that consume the queue.",
        labels=["queue"],
    )
    processes = _gauge(
        "batch_queue_worker_processes",
        "Worker processes (concurrency summed over nodes) that consume the queue.",
        labels=["queue"],
    )
    for queue in queues:
        serving = [node for node in workers.values() if queue in node["queues"]]
        per_queue.add_metric([queue], len(serving))
        processes.add_metric([queue], sum(node["concurrency"] for node in serving))
    yield from (per_queue, processes)
    yield from _beat_metrics(state.beat)


def _beat_metrics(beat: health.BeatHealth) -> Iterator[Metric]:
    info = _gauge("batch_beat_info", "The active beat (always 1): host:pid.", labels=["beat_host"])
    if beat.host:
        info.add_metric([beat.host], 1)
    yield info
    moments = (
        ("batch_beat_last_tick_timestamp_seconds", "When the active beat last ticked.",
         beat.ticked_at),
        ("batch_beat_last_reconcile_timestamp_seconds",
         "When a beat last reconciled RedBeat's entries with SQL.", beat.reconciled_at),
        ("batch_beat_last_full_reconcile_timestamp_seconds",
         "When a beat last compared every entry with SQL.", beat.full_reconciled_at),
    )  # fmt: skip
    for name, doc, at in moments:
        if at is not None:
            yield _gauge(name, doc, value=at.timestamp())


def _broker_metrics(core: Core, celery: Celery, *, ask: bool) -> Iterator[Metric]:
    """Messages waiting per queue (Redis or RabbitMQ), and the oldest one's age (Redis)."""
    lengths = _down_or(lambda: queries.broker_queue_lengths(celery)) if ask else None
    yield _gauge(
        "batch_broker_up", "1 if the broker answered this scrape, else 0.",
        value=int(lengths is not None),
    )  # fmt: skip
    if lengths is None:
        return
    depth = _gauge("batch_queue_messages", "Messages waiting in the queue.", labels=["queue"])
    for queue, length in lengths.items():
        if isinstance(length, int):
            depth.add_metric([queue], length)
    yield depth
    settings = core.settings
    if settings.effective_broker_url != settings.redis_url:
        return  # RabbitMQ does not tell a message's age
    now = utcnow()
    age = _gauge(
        "batch_queue_oldest_message_age_seconds",
        "How long the oldest message waiting in the queue has waited (0 when empty).",
        labels=["queue"],
    )
    oldest = _down_or(
        lambda: {q: redis_broker.oldest_waiting(core.redis, q) for q in settings.queues}
    )
    for queue, sent_at in (oldest or {}).items():
        age.add_metric([queue], max((now - sent_at).total_seconds(), 0.0) if sent_at else 0.0)
    yield age
