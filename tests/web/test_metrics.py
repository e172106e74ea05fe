"""``GET /metrics``: behind a token, in Prometheus's text format, and each figure equal to
what SQL and Redis say, read independently here (runs through a real worker)."""

from __future__ import annotations

import dataclasses
import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from batch import capacity, health, run_stats, runs, schedules, users
from batch.celery_app import close_celery, create_celery
from batch.constants import TASK_START_RUN
from batch.core import Core
from batch.db import utcnow
from batch.models import Run
from batch.redis_server import free_port
from batch.run_stats import DURATION_BUCKETS, LATENESS_BUCKETS
from tests.conftest import wait_for_run

SUMS = "tests.sum_squares"
NAME = "metrics-sums"
FIRST_FIRE = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: FlaskClient) -> Samples:
    """Every sample of a scrape, by name and labels (the parser checks the format)."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    text = response.get_data(as_text=True)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def of(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def fire(celery: Celery, at: datetime, params: dict[str, Any], **extra: Any) -> str:
    """Send a fire of the schedule as beat does; its run id."""
    kwargs = {
        "job": SUMS, "params": params, "trigger": f"schedule:{NAME}", "schedule": NAME,
        "scheduled_for": at.isoformat(), "overlap": "allow", "deadline_seconds": None, **extra,
    }  # fmt: skip
    celery.send_task(TASK_START_RUN, kwargs=kwargs, queue="default", ignore_result=True)
    return runs.scheduled_run_id(NAME, at)


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic dGVzdHM6eA=="])
def test_metrics_need_an_api_token(app: Flask, header: str | None) -> None:
    client = app.test_client()
    headers = {"Authorization": header} if header else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "batch_runs_total" not in response.get_data(as_text=True)


def test_runs_skips_lateness_and_duration_equal_what_sql_says(
    core: Core, celery_app: Celery, worker: Path, api: FlaskClient
) -> None:
    data = {"name": NAME, "job": SUMS, "params": {"n": 100}, "interval_seconds": 3600}
    spec = schedules.validate_schedule(core, data)
    schedules.save_schedule(core, celery_app, spec, actor="test", mode="create")
    fires = [FIRST_FIRE + timedelta(hours=hour) for hour in range(4)]
    ids = [fire(celery_app, at, {"n": 100 + hour}) for hour, at in enumerate(fires[:3])]
    failing = fire(celery_app, fires[3], {"n": 100, "fail_chunk": 50})
    # A fire long past its deadline is skipped; a fire delivered twice counts once.
    late = fire(celery_app, FIRST_FIRE - timedelta(hours=1), {"n": 10}, deadline_seconds=60)
    for run_id in [*ids, failing, late]:
        wait_for_run(core, run_id)
    fire(celery_app, fires[0], {"n": 100})
    assert wait_for_run(core, runs.submit_run(core, celery_app, SUMS, {"n": 5}, trigger="t"))
    with core.transaction() as session:  # a run of the schedule queued, not started yet
        session.add(
            Run(id="metrics-queued", job=SUMS, params={}, status="queued", trigger="t",
                schedule_name=NAME, queue="default", sent_at=utcnow())
        )  # fmt: skip
    runs.cancel_run(core, "metrics-queued", actor="t")
    samples = scrape(api)

    with core.reading() as session:
        mine = select(Run).where(Run.schedule_name == NAME).subquery()
        by_status = dict(
            session.execute(select(mine.c.status, func.count()).group_by(mine.c.status)).all()
        )
        started = session.execute(
            select(mine.c.scheduled_for, mine.c.started_at, mine.c.finished_at, mine.c.status)
            .where(mine.c.status.in_(("succeeded", "failed")))
        ).all()  # fmt: skip
        fired = session.scalar(select(func.max(mine.c.scheduled_for)))
        succeeded = session.scalar(
            select(func.max(mine.c.finished_at)).where(mine.c.status == "succeeded")
        )
    assert by_status == {"succeeded": 3, "failed": 1, "skipped": 1, "cancelled": 1}
    labels = {"schedule": NAME, "batch_job": SUMS}
    for status, count in by_status.items():
        assert of(samples, "batch_runs_total", **labels, status=status) == count
    assert of(samples, "batch_skips_total", **labels, reason="deadline") == 1
    assert of(samples, "batch_skips_total", **labels, reason="overlap") is None

    lateness = [(s - f).total_seconds() for f, s, _, _ in started]
    durations = [(e - s).total_seconds() for _, s, e, _ in started]
    for name, values, bounds in (
        ("batch_fire_lateness_seconds", lateness, LATENESS_BUCKETS),
        ("batch_run_duration_seconds", durations, DURATION_BUCKETS),
    ):
        assert of(samples, f"{name}_count", **labels) == len(values) == 4
        assert of(samples, f"{name}_sum", **labels) == pytest.approx(sum(values), abs=1e-3)
        for bound in bounds:
            within = sum(1 for value in values if value <= bound)
            assert of(samples, f"{name}_bucket", **labels, le=f"{float(bound)}") == within
        assert of(samples, f"{name}_bucket", **labels, le="+Inf") == len(values)

    schedule = {"schedule": NAME}
    last_fire = of(samples, "batch_schedule_last_fire_timestamp_seconds", **schedule)
    assert last_fire == fired.timestamp() == fires[3].timestamp()
    last_success = of(samples, "batch_schedule_last_success_timestamp_seconds", **schedule)
    assert last_success == pytest.approx(succeeded.timestamp(), abs=1e-3)
    info = {"schedule": NAME, "batch_job": SUMS, "queue": "default"}
    assert of(samples, "batch_schedule_info", **info) == 1
    assert of(samples, "batch_schedule_enabled", **schedule) == 1
    due = core.redis.zscore(
        celery_app.redbeat_conf.schedule_key, celery_app.redbeat_conf.key_prefix + NAME
    )
    assert of(samples, "batch_schedule_next_fire_timestamp_seconds", **schedule) == due

    # A run of no schedule counts under its job alone.
    assert of(samples, "batch_runs_total", schedule="", batch_job=SUMS, status="succeeded")

    # Deleted, the schedule's series go.
    schedules.remove_schedule(core, celery_app, NAME, actor="test")
    after = scrape(api)
    assert of(after, "batch_runs_total", **labels, status="succeeded") is None
    assert of(after, "batch_schedule_info", **info) is None


def test_queues_workers_and_beat_equal_what_redis_says(
    core: Core, celery_app: Celery, worker: Path, api: FlaskClient
) -> None:
    ticked = datetime(2026, 12, 7, 12, 0, 1, tzinfo=UTC)
    health.record(core.redis, health.TICKED, ticked)
    health.record(core.redis, health.RECONCILED, ticked - timedelta(seconds=30))
    samples = scrape(api)

    assert of(samples, "batch_redis_up") == 1 and of(samples, "batch_broker_up") == 1
    online = capacity.online_workers(core.redis)
    assert of(samples, "batch_workers_online") == len(online) >= 1
    for queue in core.settings.queues:
        serving = [node for node in online.values() if queue in node["queues"]]
        assert of(samples, "batch_queue_workers_online", queue=queue) == len(serving)
        assert of(samples, "batch_queue_messages", queue=queue) is not None
        age = of(samples, "batch_queue_oldest_message_age_seconds", queue=queue)
        # A message's age is known on a Redis broker only.
        assert (age is not None and age >= 0) == (not core.settings.broker_url)
    assert of(samples, "batch_beat_last_tick_timestamp_seconds") == ticked.timestamp()
    reconciled = of(samples, "batch_beat_last_reconcile_timestamp_seconds")
    assert reconciled == ticked.timestamp() - 30
    assert of(samples, "batch_beat_info", beat_host=health.beat_name()) == 1


def test_a_scrape_with_redis_away_still_answers_from_sql(core: Core, api_token: str) -> None:
    gone = f"redis://127.0.0.1:{free_port()}/0"
    samples = scrape_with(core, api_token, redis_url=gone, broker_url=gone)
    assert (of(samples, "batch_redis_up"), of(samples, "batch_broker_up")) == (0, 0)
    assert not any(name == "batch_workers_online" for name, _ in samples)
    assert of(samples, "batch_scrape_duration_seconds") is not None


def test_a_metrics_token_reads_metrics_and_nothing_else(app: Flask, core: Core) -> None:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {users.add_token(core, 'prom', 'metrics')}"
    assert "batch_runs_total" in client.get("/metrics").get_data(as_text=True)
    for method, path in (("GET", "/api/runs"), ("POST", f"/api/jobs/{SUMS}/runs")):
        response = client.open(path, method=method, json={"n": 1})
        assert (response.status_code, response.json) == (
            403,
            {"error": "token 'prom' may only read /metrics"},
        )


def test_histograms_per_job_or_off_for_many_schedules(
    core: Core, celery_app: Celery, api_token: str
) -> None:
    for name in ("sums-a", "sums-b"):
        data = {"name": name, "job": SUMS, "params": {}, "interval_seconds": 60}
        spec = schedules.validate_schedule(core, data)
        schedules.save_schedule(core, celery_app, spec, actor="test", mode="create")
    observed = {"sums-a": [0.3, 4.0], "sums-b": [50.0], "": [0.7]}
    with core.transaction() as session:
        for schedule, seconds in observed.items():
            for value in seconds:
                key = run_stats.Key(SUMS, schedule)
                run_stats.observe(session, key, run_stats.LATENESS, value)
                run_stats.ended(session, key, "succeeded", duration=value * 2)
    by_schedule = scrape_with(core, api_token, metrics_histograms="schedule")
    labels = {"schedule": "sums-a", "batch_job": SUMS}
    assert of(by_schedule, "batch_fire_lateness_seconds_count", **labels) == 2
    assert of(by_schedule, "batch_fire_lateness_seconds_sum", **labels) == 4.3

    by_job = scrape_with(core, api_token, metrics_histograms="job")
    assert of(by_job, "batch_fire_lateness_seconds_count", **labels) is None
    job = {"batch_job": SUMS}
    assert of(by_job, "batch_fire_lateness_seconds_count", **job) == 4
    assert of(by_job, "batch_fire_lateness_seconds_sum", **job) == pytest.approx(55.0)
    assert of(by_job, "batch_fire_lateness_seconds_bucket", **job, le="0.5") == 1
    assert of(by_job, "batch_fire_lateness_seconds_bucket", **job, le="5.0") == 3
    assert of(by_job, "batch_run_duration_seconds_sum", **job) == pytest.approx(110.0)
    # Counters stay per schedule whatever the histograms do.
    assert of(by_job, "batch_runs_total", **labels, status="succeeded") == 2

    # A schedule deleted, its job's histograms keep what it observed (a total never drops).
    schedules.remove_schedule(core, celery_app, "sums-b", actor="test")
    after = scrape_with(core, api_token, metrics_histograms="job")
    assert of(after, "batch_fire_lateness_seconds_count", **job) == 4

    off = scrape_with(core, api_token, metrics_histograms="off")
    assert not any(name.startswith("batch_fire_lateness") for name, _ in off)
    assert of(off, "batch_runs_total", **labels, status="succeeded") == 2


def scrape_with(core: Core, token: str, **changes: Any) -> Samples:
    """A scrape of an app of the suite's settings with ``changes``."""
    from batch.web import create_app

    app = create_app(dataclasses.replace(core.settings, **changes))
    try:
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return scrape(client)
    finally:
        close_celery(app.extensions["batch_celery"])


def test_a_scrape_asking_for_gzip_gets_it(api: FlaskClient) -> None:
    plain = api.get("/metrics")
    packed = api.get("/metrics", headers={"Accept-Encoding": "gzip, deflate"})
    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["Vary"]
    text = gzip.decompress(packed.get_data()).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"batch_runs", "batch_schedule_info", "batch_redis_up"} <= names


def test_queue_depth_and_oldest_age_of_a_queue_no_worker_reads(core: Core, api_token: str) -> None:
    idle = "metrics-idle"
    settings = dataclasses.replace(core.settings, queues=(*core.settings.queues, idle))
    celery = create_celery(settings, Core(settings))
    sent_at = utcnow() - timedelta(seconds=90)
    try:
        for _ in range(3):
            celery.send_task(
                TASK_START_RUN, kwargs={}, queue=idle, ignore_result=True,
                **runs.sent_at_header(sent_at),
            )  # fmt: skip
        before = utcnow()
        samples = scrape_with(core, api_token, queues=settings.queues)
        after = utcnow()
    finally:
        with celery.connection_for_write() as connection:
            connection.default_channel.queue_purge(idle)
        close_celery(celery)
    assert of(samples, "batch_queue_messages", queue=idle) == 3
    age = of(samples, "batch_queue_oldest_message_age_seconds", queue=idle)
    if core.settings.broker_url:
        assert age is None  # RabbitMQ does not tell a message's age
    else:
        low, high = ((moment - sent_at).total_seconds() for moment in (before, after))
        assert low <= age <= high
    assert of(samples, "batch_queue_workers_online", queue=idle) == 0
