"""The front page: schedules due next, runs going now, failures, queues and workers."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient

from batch import alerts, health
from batch.celery_app import close_celery
from batch.constants import BEAT_HEALTH_KEY
from batch.core import Core
from batch.models import Schedule
from batch.times import show_utc
from tests.conftest import ADMIN
from tests.test_queries import SALES, add_chunks, add_run
from tests.web.conftest import csrf_token
from tests.web.test_schedules_pages import add_schedule


def section(page: str, name: str) -> str:
    """The HTML of one card of the overview."""
    found = re.search(rf'<section class="card" id="{name}">(.*?)</section>', page, re.S)
    assert found, f"no {name} section"
    return found.group(1)


@pytest.fixture
def redbeat_zset(app: Flask) -> Iterator[tuple[str, str]]:
    """The RedBeat schedule key and entry key prefix, emptied before and after the test."""
    conf = app.extensions["batch_celery"].redbeat_conf
    client = app.extensions["batch_core"].redis
    client.delete(conf.schedule_key)
    yield conf.schedule_key, conf.key_prefix
    client.delete(conf.schedule_key)


def test_overview_shows_workers_and_queue_lengths(
    client: FlaskClient, core: Core, worker: Path
) -> None:
    queues_configured = core.settings.queues
    page = client.get("/").get_data(as_text=True)
    workers = section(page, "workers")
    hosts = re.findall(r'<tr data-worker="([^"]+)">', workers)
    assert any(host.startswith("test-worker@") for host in hosts), workers
    test_worker = re.search(r'<tr data-worker="test-worker@.*?</tr>', workers, re.S).group(0)
    assert '<td class="num">2</td>' in test_worker  # its --concurrency
    assert ", ".join(sorted(queues_configured)) in test_worker
    queues = section(page, "queues")
    lengths = dict(
        re.findall(r'<tr data-queue="([^"]+)"><td>[^<]+</td><td class="num">(\d+)</td>', queues)
    )
    assert sorted(lengths) == sorted(queues_configured)


def test_overview_shows_due_schedules_going_runs_and_failures(
    client: FlaskClient, core: Core, redbeat_zset: tuple[str, str]
) -> None:
    schedule_key, prefix = redbeat_zset
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    core.redis.zadd(
        schedule_key,
        {
            f"{prefix}later": (soon + timedelta(hours=1)).timestamp(),
            f"{prefix}hourly": soon.timestamp(),
        },
    )
    with core.transaction() as session:
        session.add(Schedule(name="hourly", job=SALES, params={}, cron="0 * * * *"))
    add_run(core, "going", status="running", chunk_count=4)
    add_chunks(core, "going", ["succeeded", "running"])
    add_run(core, "broken", status="failed", minute=-5, error="chunk 3: ValueError: boom")
    add_run(core, "fine", status="succeeded", minute=-6)

    page = client.get("/").get_data(as_text=True)
    due = section(page, "due")
    assert re.findall(r'<tr data-schedule="([^"]+)">', due) == ["hourly", "later"]
    hourly = re.search(r'<tr data-schedule="hourly">(.*?)</tr>', due, re.S).group(1)
    assert '<a href="/schedules/hourly">hourly</a>' in hourly
    assert SALES in hourly and soon.strftime("%Y-%m-%d %H:%M:%S") in hourly
    assert re.search(r"\d min \d\d s", hourly)

    going = section(page, "going")
    assert re.findall(r'<tr data-run-id="([^"]+)"', going) == ["going"]
    assert ">1/4</span>" in going and 'style="width: 25.0%"' in going
    failures = section(page, "failures")
    assert re.findall(r'<tr data-run-id="([^"]+)"', failures) == ["broken"]
    assert "chunk 3: ValueError: boom" in failures
    assert "runs.js" in page


def test_overview_with_nothing_to_show(client: FlaskClient, redbeat_zset: tuple[str, str]) -> None:
    page = client.get("/").get_data(as_text=True)
    assert "No schedule is enabled." in section(page, "due")
    assert "Nothing is running." in section(page, "going")
    assert "No failed run." in section(page, "failures")


def test_overview_on_a_broker_that_is_not_redis(core: Core, admin: tuple[str, str]) -> None:
    from batch.web import create_app

    # Whatever queues are configured (BATCH_QUEUES) are the ones listed.
    queues_configured = ("light", "team-a", "heavy.1", "reports", "cleanups")
    app = create_app(
        dataclasses.replace(core.settings, broker_url="memory://", queues=queues_configured)
    )
    client = app.test_client()
    client.post(
        "/login",
        data={"name": ADMIN[0], "password": ADMIN[1], "csrf_token": csrf_token(client)},
    )
    try:
        response = client.get("/")
    finally:
        close_celery(app.extensions["batch_celery"])
    assert response.status_code == 200
    queues = section(response.get_data(as_text=True), "queues")
    assert re.findall(
        r'<tr data-queue="([^"]+)"><td>[^<]+</td><td class="num">([^<]+)</td>', queues
    ) == [(name, "n/a") for name in queues_configured]


def test_open_alerts_lead_the_overview_and_every_alert_is_on_its_schedules_page(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app)  # "hourly"
    finished = (("f1", "failed"), ("ok", "succeeded"), ("f2", "failed"))
    assert 'id="alerts"' not in client.get("/").get_data(as_text=True)  # none: no card
    for minute, (run_id, status) in enumerate(finished):  # each run finishes before the next
        add_run(core, run_id, job=SALES, status=status, minute=minute, schedule_name="hourly")
        with core.transaction() as session:
            alerts.run_finished(session, run_id, "hourly", status, f"error of {run_id}")
    page = client.get("/").get_data(as_text=True)
    assert re.findall(r'data-alert="([^"]+)"', page) == ["run_failed:hourly:ok"]
    assert "a run of hourly failed: error of f2" in page
    detail = client.get("/schedules/hourly").get_data(as_text=True)
    shown = re.findall(r'data-alert="([^"]+)"', detail)
    assert sorted(shown) == ["run_failed:hourly:ok", "run_failed:hourly:start"]
    assert 'href="/runs/ok">ok</a>' in detail  # f1's alert was resolved by the run "ok"


def test_the_scheduler_card_shows_the_active_beat_and_when_it_last_ticked(
    client: FlaskClient, core: Core
) -> None:
    core.redis.delete(BEAT_HEALTH_KEY)
    card = section(client.get("/").get_data(as_text=True), "scheduler")
    assert "none has reported" in card and "never" in card and "silent" in card

    ticked = datetime.now(UTC).replace(microsecond=0)
    health.record(core.redis, health.TICKED, ticked)
    health.record(core.redis, health.RECONCILED, ticked - timedelta(seconds=7))
    card = section(client.get("/").get_data(as_text=True), "scheduler")
    assert re.search(r"data-beat-host>([^<]+)<", card).group(1) == health.beat_name()
    assert show_utc(ticked) in card and "ticking" in card and "silent" not in card
    assert show_utc(ticked - timedelta(seconds=7)) in card
    assert "not yet" in card  # no full reconcile reported

    health.record(core.redis, health.TICKED, ticked - timedelta(minutes=2))
    assert "silent" in section(client.get("/").get_data(as_text=True), "scheduler")
