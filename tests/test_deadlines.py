"""Deadlines: fires judged against "must start within" and "must succeed within".

The first tests judge fires at chosen moments against runs written to SQL as each case needs
(a check reads nothing else). The last runs real beat, worker nodes and their recovery sweep:
a schedule whose runs cannot start raises its alert within seconds of the deadline, one that
runs on time raises none until beat is stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import select, update

from batch import alerts, schedules
from batch.core import Core
from batch.deadlines import DeadlineWatch
from batch.lab import Lab, wait_until
from batch.models import Alert, Run, Schedule
from batch.processes import start_beat, stop_process
from batch.runs import scheduled_run_id
from tests.conftest import ROOT

#: When each test's schedules were last changed: fires up to then are not judged.
SAVED = datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC)


def at(minute: int, second: int = 0) -> datetime:
    """A moment of the hour the tests judge: 10:mm:ss UTC."""
    return datetime(2026, 12, 1, 10, minute, second, tzinfo=UTC)


def add(core: Core, celery: Celery, name: str, **fields: Any) -> None:
    """A schedule saved at ``SAVED`` (every minute unless ``fields`` say otherwise)."""
    data = {"name": name, "job": "tests.sum_squares", "params": {"n": 10}, "cron": "* * * * *"}
    spec = schedules.validate_schedule(core, {**data, **fields})
    schedules.save_schedule(core, celery, spec, actor="test", mode="create")
    with core.transaction() as session:
        session.execute(update(Schedule).where(Schedule.name == name).values(updated_at=SAVED))


def add_run(core: Core, schedule: str, fire: datetime, status: str, **times: datetime) -> str:
    """The run of ``schedule``'s fire at ``fire``, as the engine would have stored it."""
    run_id = scheduled_run_id(schedule, fire)
    with core.transaction() as session:
        session.add(
            Run(
                id=run_id, job="tests.sum_squares", params={"n": 10}, status=status,
                trigger=f"schedule:{schedule}", schedule_name=schedule, scheduled_for=fire,
                queue="default", created_at=fire, **times,
            )
        )  # fmt: skip
    return run_id


def stored(core: Core) -> list[tuple[str, str, str | None]]:
    """Every alert as (id, kind, resolved_by), oldest first."""
    with core.reading() as session:
        rows = session.scalars(select(Alert).order_by(Alert.raised_at, Alert.id))
        return [(row.id, row.kind, row.resolved_by) for row in rows]


def message(core: Core, cause: str) -> str:
    with core.reading() as session:
        return session.get_one(Alert, cause).message


def cause(schedule: str, fire: datetime) -> str:
    return f"missed_deadline:{schedule}:{fire.isoformat()}"


def test_a_fire_with_no_run_in_time_raises_one_alert_until_a_success(
    core: Core, celery_app: Celery
) -> None:
    add(core, celery_app, "reports", must_start_within_seconds=30)
    add_run(core, "reports", at(1), "succeeded", started_at=at(1, 5), finished_at=at(1, 9))
    watch = DeadlineWatch()

    # 10:00 was before the schedule was saved; 10:01 started on time; 10:02 has no run.
    assert watch.check(core, at(1, 31)) == []
    assert watch.check(core, at(1, 33)) == []
    assert watch.check(core, at(2, 31)) == []  # its deadline, and the grace, not yet past
    assert watch.check(core, at(2, 33)) == [cause("reports", at(2))]
    assert stored(core) == [(cause("reports", at(2)), "missed_start", None)]
    assert message(core, cause("reports", at(2))) == (
        "the fire of reports at 2026-12-01 10:02:00 UTC did not start in time:"
        " no run was recorded for it (beat did not fire it, or no worker took it)"
    )

    # 10:03 is missed too: the open alert stands for it; a second sweeper finds nothing new.
    assert watch.check(core, at(3, 33)) == []
    assert DeadlineWatch().check(core, at(3, 33)) == []
    assert len(stored(core)) == 1

    # The next success resolves it; the next miss is a new alert.
    success = add_run(core, "reports", at(4), "succeeded", started_at=at(4, 1))
    with core.transaction() as session:
        alerts.run_finished(session, success, "reports", "succeeded", None)
    assert watch.check(core, at(4, 33)) == []
    assert watch.check(core, at(5, 33)) == [cause("reports", at(5))]
    assert stored(core) == [
        (cause("reports", at(2)), "missed_start", success),
        (cause("reports", at(5)), "missed_start", None),
    ]


@pytest.mark.parametrize(
    ("run", "why"),
    [
        ({"status": "queued"}, "its run was still queued at the deadline"),
        (
            {"status": "succeeded", "started_at": at(2, 45)},
            "its run started only at 2026-12-01 10:02:45 UTC",
        ),
        (
            {"status": "skipped", "error": "skipped: run x of this schedule is still going"},
            "its run was skipped: run x of this schedule is still going",
        ),
    ],
)
def test_a_run_queued_started_late_or_skipped_missed_its_start(
    core: Core, celery_app: Celery, run: dict[str, Any], why: str
) -> None:
    add(core, celery_app, "reports", must_start_within_seconds=30)
    status = run.pop("status")
    run_id = add_run(core, "reports", at(2), status, **run)
    if "error" in run:
        with core.transaction() as session:
            session.execute(update(Run).where(Run.id == run_id).values(error=run["error"]))
    DeadlineWatch().check(core, at(2, 33))
    assert message(core, cause("reports", at(2))).endswith(f"did not start in time: {why}")
    with core.reading() as session:
        assert session.get_one(Alert, cause("reports", at(2))).run_id == run_id


def test_the_success_deadline_judges_when_each_run_succeeded(
    core: Core, celery_app: Celery
) -> None:
    cases = {
        "on-time": ("succeeded", {"started_at": at(2, 1), "finished_at": at(2, 59)}),
        "late": ("succeeded", {"started_at": at(2, 1), "finished_at": at(3, 10)}),
        "running": ("running", {"started_at": at(2, 1)}),
        "failed": ("failed", {"started_at": at(2, 1), "finished_at": at(2, 20)}),
        "never": None,
    }
    for name, run in cases.items():
        add(core, celery_app, name, must_succeed_within_seconds=60)
        if run is not None:
            add_run(core, name, at(2), run[0], **run[1])
    raised = DeadlineWatch().check(core, at(3, 3))
    # A failed run is the failure alert's to tell; the others missed the deadline.
    assert sorted(raised) == sorted(cause(name, at(2)) for name in ("late", "running", "never"))
    assert {row[1] for row in stored(core)} == {"missed_success"}
    assert message(core, cause("late", at(2))).endswith(
        "did not succeed in time: its run succeeded only at 2026-12-01 10:03:10 UTC"
    )
    assert message(core, cause("running", at(2))).endswith(
        "did not succeed in time: its run was still running at the deadline"
    )


def test_an_interval_schedule_is_judged_from_its_newest_fire(
    core: Core, celery_app: Celery
) -> None:
    add(
        core,
        celery_app,
        "every-minute",
        cron=None,
        interval_seconds=60,
        must_start_within_seconds=10,
    )
    first = SAVED + timedelta(seconds=5)
    add_run(core, "every-minute", first, "succeeded", started_at=first + timedelta(seconds=1))
    watch = DeadlineWatch()
    assert watch.check(core, first + timedelta(seconds=13)) == []  # the first fire, on time
    assert watch.check(core, first + timedelta(seconds=71)) == []  # the second's deadline: not yet
    second = first + timedelta(seconds=60)
    assert watch.check(core, first + timedelta(seconds=73)) == [cause("every-minute", second)]


def test_a_disabled_schedule_and_one_without_deadlines_are_not_judged(
    core: Core, celery_app: Celery
) -> None:
    add(core, celery_app, "plain")
    add(core, celery_app, "off", must_start_within_seconds=30, enabled=False)
    assert DeadlineWatch().check(core, at(30)) == []
    assert stored(core) == []


# --- With real beat, worker nodes and their sweep ------------------------------------------------

QUEUE, IDLE = "deadlines", "nobody-consumes"
#: The issue's target: an alert within this long of the missed deadline.
ALERT_SECONDS = 30


@pytest.fixture
def lab(core: Core, tmp_path: Path) -> Iterator[Lab]:
    lab = Lab.open(
        core.settings, tmp_path, environ={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        queues=(QUEUE, IDLE, "reports", "cleanups"), sweep_interval_seconds=0.5,
    )  # fmt: skip
    try:
        yield lab
    finally:
        lab.close()


def test_alerts_with_real_beat_and_workers_come_in_seconds_and_only_for_misses(
    lab: Lab, tmp_path: Path
) -> None:
    lab.start_node("deadlines", queues=(QUEUE,))
    for name, queue in (("on-time", QUEUE), ("stuck", IDLE)):
        spec = schedules.validate_schedule(
            lab.core,
            {
                "name": name, "job": "tests.sum_squares", "params": {"n": 100},
                "interval_seconds": 2, "queue": queue,
                "must_start_within_seconds": 3, "must_succeed_within_seconds": 6,
            },
        )  # fmt: skip
        schedules.save_schedule(lab.core, lab.celery, spec, actor="test", mode="create")
    beat_log = tmp_path / "beat.log"
    beat = start_beat({**lab.environ, **lab.settings.as_env()}, beat_log, tmp_path)
    try:
        # "stuck" fires into a queue no worker reads: its first fire misses its start.
        stuck = wait_until(lambda: open_alert(lab.core, "stuck"), timeout=ALERT_SECONDS)
        fire = datetime.fromisoformat(stuck.id.removeprefix("missed_deadline:stuck:"))
        late = (stuck.raised_at - (fire + timedelta(seconds=3))).total_seconds()
        assert 0 < late < ALERT_SECONDS, late
        print(f"stuck: alerted {late:.1f}s after its start deadline")
        assert stuck.kind == "missed_start"
        # Its start messages wait in the idle queue: no worker made a run of them.
        assert stuck.message.endswith("no worker took it)")
        # "on-time" runs every 2 s and meets both deadlines: no alert while beat runs.
        time.sleep(8)
        assert open_alert(lab.core, "on-time") is None, lab.logs()
    finally:
        stop_process(beat)
    # Beat stopped: the next fire of "on-time" has no run.
    stopped = time.time()
    missed = wait_until(lambda: open_alert(lab.core, "on-time"), timeout=ALERT_SECONDS)
    assert missed.message.endswith(
        "no run was recorded for it (beat did not fire it, or no worker took it)"
    )
    assert missed.run_id is None
    assert time.time() - stopped < 2 + 3 + ALERT_SECONDS


def open_alert(core: Core, schedule: str) -> Alert | None:
    with core.reading() as session:
        return session.scalars(
            select(Alert).where(
                Alert.schedule_name == schedule,
                Alert.resolved_at.is_(None),
                Alert.kind.in_(("missed_start", "missed_success")),
            )
        ).first()
