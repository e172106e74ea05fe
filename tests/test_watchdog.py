"""System alerts: beat silent, no worker for a queue with a fire due, a queue's old message.

Each test has a redis-server of its own (no other test's worker is online there). The first
tests drive the watchdog at chosen moments; the last kills a real beat with ``kill -9`` and
starts it again, with a real worker node's sweep watching.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from batch import capacity, health, runs, schedules
from batch.core import Core
from batch.db import utcnow
from batch.lab import Lab, wait_until
from batch.models import Alert, AlertEvent, Schedule
from batch.processes import start_beat, stop_process
from batch.watchdog import Watchdog
from tests.conftest import ROOT
from tests.test_queries import SUMS

#: The default queue of these tests (no other test's worker reads it), and one nobody serves.
OWN, LONELY = "watchdog", "lonely"


@pytest.fixture
def lab(core: Core, tmp_path: Path) -> Iterator[Lab]:
    lab = Lab.open(
        core.settings, tmp_path, environ={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        queues=(OWN, "reports", "cleanups", LONELY), sweep_interval_seconds=0.5,
        beat_silent_seconds=5, no_worker_alert_seconds=0, queue_age_alert_seconds=60,
    )  # fmt: skip
    try:
        yield lab
    finally:
        lab.close()


def add(lab: Lab, name: str, **fields: object) -> None:
    data = {"name": name, "job": "tests.sum_squares", "params": {"n": 10}, "cron": "* * * * *"}
    spec = schedules.validate_schedule(lab.core, {**data, **fields})
    schedules.save_schedule(lab.core, lab.celery, spec, actor="test", mode="create")


def alerts_of(lab: Lab, kind: str) -> list[tuple[str, str, bool]]:
    """(id, message, resolved) of every alert of ``kind``, oldest first."""
    with lab.core.reading() as session:
        rows = session.scalars(select(Alert).where(Alert.kind == kind).order_by(Alert.raised_at))
        return [(row.id, row.message, row.resolved_at is not None) for row in rows]


def events(lab: Lab) -> list[tuple[str, str]]:
    with lab.core.reading() as session:
        rows = session.scalars(select(AlertEvent).order_by(AlertEvent.id))
        return [(row.alert_id, row.event) for row in rows]


def every_queue_served_but(lab: Lab, *missing: str) -> None:
    served = [q for q in lab.settings.queues if q not in missing]
    capacity.announce(lab.core.redis, "node@test", 2, served, ttl=60)


def test_beat_silent_is_raised_once_and_resolved_when_it_ticks_again(lab: Lab) -> None:
    every_queue_served_but(lab)
    watchdog, now = Watchdog(), utcnow()
    assert watchdog.check(lab.core, lab.celery, now) == []  # no schedule: nothing to fire
    add(lab, "reports")
    ticked = now - timedelta(seconds=4)
    health.record(lab.core.redis, health.TICKED, ticked)
    assert watchdog.check(lab.core, lab.celery, now) == []  # 4 s: within its 5
    later = now + timedelta(seconds=2)
    cause = f"beat_silent:beat:{ticked.isoformat()}"
    assert watchdog.check(lab.core, lab.celery, later) == [cause]
    assert Watchdog().check(lab.core, lab.celery, later) == []  # another sweeper: no second
    [(alert_id, message, resolved)] = alerts_of(lab, "beat_silent")
    assert (alert_id, resolved) == (cause, False)
    assert message.startswith("beat has not ticked since ") and "no schedule fires" in message

    health.record(lab.core.redis, health.TICKED, later)
    assert watchdog.check(lab.core, lab.celery, later + timedelta(seconds=1)) == []
    assert alerts_of(lab, "beat_silent") == [(cause, message, True)]
    assert events(lab) == [(cause, "raised"), (cause, "resolved")]


def test_a_beat_that_never_reported_is_silent_from_when_the_watch_first_saw_it(lab: Lab) -> None:
    every_queue_served_but(lab)
    add(lab, "reports")
    watchdog, now = Watchdog(), utcnow()
    assert watchdog.check(lab.core, lab.celery, now) == []
    assert watchdog.check(lab.core, lab.celery, now + timedelta(seconds=6)) == [
        f"beat_silent:beat:{now.isoformat()}"
    ]


def test_no_worker_for_a_queue_with_a_fire_due_until_one_comes_online(lab: Lab) -> None:
    health.record(lab.core.redis, health.TICKED, utcnow() + timedelta(hours=1))  # beat fine
    every_queue_served_but(lab, LONELY)
    watchdog, now = Watchdog(), utcnow()
    assert watchdog.check(lab.core, lab.celery, now) == []  # no schedule on it
    add(lab, "lonely-report", queue=LONELY)
    [cause] = watchdog.check(lab.core, lab.celery, now)
    assert cause == f"no_worker:{LONELY}:{now.isoformat()}"
    [(_, message, _)] = alerts_of(lab, "no_worker")
    assert message.startswith(f"no worker is online for queue {LONELY}; schedule lonely-report")
    assert watchdog.check(lab.core, lab.celery, now + timedelta(seconds=1)) == []  # still one

    every_queue_served_but(lab)
    watchdog.check(lab.core, lab.celery, now + timedelta(seconds=2))
    assert [resolved for *_, resolved in alerts_of(lab, "no_worker")] == [True]
    assert events(lab) == [(cause, "raised"), (cause, "resolved")]


def test_a_message_waiting_past_the_limit_is_a_backlog_until_taken(lab: Lab) -> None:
    if lab.settings.effective_broker_url != lab.settings.redis_url:
        pytest.skip("a message's age is read from the Redis broker's lists")
    health.record(lab.core.redis, health.TICKED, utcnow() + timedelta(hours=1))  # beat fine
    every_queue_served_but(lab)  # served, but nobody takes it: a stuck worker
    add(lab, "lonely-report", queue=LONELY)
    with lab.core.reading() as session:
        schedule = session.get_one(Schedule, "lonely-report")
    runs.submit_run(lab.core, lab.celery, SUMS, {"n": 10}, trigger="test", schedule=schedule)
    watchdog = Watchdog()
    assert watchdog.check(lab.core, lab.celery, utcnow()) == []
    [backlog] = watchdog.check(lab.core, lab.celery, utcnow() + timedelta(seconds=61))
    assert backlog.startswith(f"queue_backlog:{LONELY}:")
    [(_, message, _)] = alerts_of(lab, "queue_backlog")
    assert f"the oldest message in queue {LONELY} has waited 6" in message
    assert "BATCH_QUEUE_AGE_ALERT_SECONDS=60" in message

    lab.celery.control.purge()  # taken (here: dropped): the condition is gone
    watchdog.check(lab.core, lab.celery, utcnow() + timedelta(seconds=62))
    assert [resolved for *_, resolved in alerts_of(lab, "queue_backlog")] == [True]


def test_beat_killed_raises_beat_silent_and_its_restart_resolves_it(
    lab: Lab, tmp_path: Path
) -> None:
    add(lab, "reports", queue=OWN)
    lab.start_node("watcher", queues=(OWN,))
    env = {**lab.environ, **lab.settings.as_env()}
    beat = start_beat(env, tmp_path / "beat-1.log", tmp_path)
    try:
        wait_until(lambda: health.read(lab.core.redis).ticked_at, timeout=30)
        assert alerts_of(lab, "beat_silent") == []
        beat.send_signal(signal.SIGKILL)
        beat.wait()
        killed = utcnow()
        wait_until(lambda: alerts_of(lab, "beat_silent"), timeout=30)
        raised_after = (utcnow() - killed).total_seconds()
        assert raised_after < 5 + 2 + 30, raised_after
        beat = start_beat(env, tmp_path / "beat-2.log", tmp_path)
        wait_until(lambda: all(resolved for *_, resolved in alerts_of(lab, "beat_silent")), 30)
    finally:
        if beat.poll() is None:
            stop_process(beat)
    assert len(alerts_of(lab, "beat_silent")) == 1
