"""Alerts with a real worker: a failed run of a schedule raises one, its next success resolves
it, and a cause seen twice (or by two processes at once) raises one alert."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from celery import Celery
from sqlalchemy import select

from batch import alerts, runs, schedules
from batch.constants import TASK_START_RUN
from batch.core import Core
from batch.entries import BatchEntry
from batch.models import Alert, AuditEntry, Run, Schedule
from batch.reconcile import reconcile
from tests.conftest import wait_for_run
from tests.test_engine import expected_sum
from tests.test_queries import SUMS
from tests.web.test_schedules_pages import add_schedule


def stored_alerts(core: Core) -> list[tuple[str, str, str | None, str | None, str | None]]:
    with core.reading() as session:
        rows = session.scalars(select(Alert).order_by(Alert.raised_at))
        return [(a.id, a.kind, a.schedule_name, a.run_id, a.resolved_by) for a in rows]


def run_of_schedule(core: Core, celery_app: Celery, params: dict[str, object]) -> Run:
    with core.reading() as session:
        schedule = session.get_one(Schedule, "hourly")
    run_id = runs.submit_run(core, celery_app, SUMS, params, trigger="test", schedule=schedule)
    return wait_for_run(core, run_id)


def test_a_failed_run_raises_one_alert_and_the_next_success_resolves_it(
    core: Core, celery_app: Celery, worker: Path, tmp_path: Path
) -> None:
    add_schedule(core, celery_app)  # "hourly", a tests.sum_squares schedule
    outage = tmp_path / "outage"
    outage.touch()
    failing = {"n": 400, "fail_chunk": 100, "fail_while_file": str(outage)}
    failed = run_of_schedule(core, celery_app, failing)
    assert failed.status == "failed"
    cause = "run_failed:hourly:start"  # the streak since the schedule's start
    assert stored_alerts(core) == [(cause, "run_failed", "hourly", failed.id, None)]
    with core.reading() as session:
        message = session.get_one(Alert, cause).message
    assert message.startswith("a run of hourly failed: chunk ") and "failed on purpose" in message

    # Seen again (a second sweeper, a run failed twice), or the streak grows: nothing new.
    runs.fail_run(core, failed.id, "failed again")
    assert run_of_schedule(core, celery_app, failing).status == "failed"
    with core.transaction() as session:
        assert not alerts.raise_alert(session, cause, "run_failed", "again", schedule="hourly")
    assert len(stored_alerts(core)) == 1

    # A run of no schedule raises nothing.
    loose = runs.submit_run(core, celery_app, SUMS, failing, trigger="test")
    assert wait_for_run(core, loose).status == "failed"
    assert len(stored_alerts(core)) == 1

    outage.unlink()
    succeeded = run_of_schedule(core, celery_app, {"n": 400})
    assert (succeeded.status, succeeded.result) == ("succeeded", {"sum": expected_sum(400)})
    assert stored_alerts(core) == [(cause, "run_failed", "hourly", failed.id, succeeded.id)]
    with core.reading() as session:
        assert alerts.open_alerts(session, 10) == []
        assert [a.id for a in alerts.schedule_alerts(session, "hourly", 10)] == [cause]

    # The next failure starts a new streak: a new alert, named by the success before it.
    outage.touch()
    again = run_of_schedule(core, celery_app, failing)
    assert stored_alerts(core)[-1] == (
        f"run_failed:hourly:{succeeded.id}",
        "run_failed",
        "hourly",
        again.id,
        None,
    )


def test_alert_after_n_failures_in_a_row(
    core: Core, celery_app: Celery, worker: Path, tmp_path: Path
) -> None:
    add_schedule(core, celery_app, alert_after_failures=3)
    outage = tmp_path / "outage"
    outage.touch()
    failing = {"n": 400, "fail_chunk": 100, "fail_while_file": str(outage)}
    assert run_of_schedule(core, celery_app, failing).status == "failed"
    outage.unlink()
    assert run_of_schedule(core, celery_app, {"n": 400}).status == "succeeded"
    outage.touch()
    streak = [run_of_schedule(core, celery_app, failing) for _ in range(2)]
    assert stored_alerts(core) == []  # 1, then a success, then 2 in a row
    third = run_of_schedule(core, celery_app, failing)
    fourth = run_of_schedule(core, celery_app, failing)
    assert [run.status for run in (*streak, third, fourth)] == ["failed"] * 4
    with core.reading() as session:
        last_success = session.scalar(
            select(Run.id).where(Run.status == "succeeded", Run.schedule_name == "hourly")
        )
    cause = f"run_failed:hourly:{last_success}"
    assert stored_alerts(core) == [(cause, "run_failed", "hourly", third.id, None)]
    with core.reading() as session:
        assert session.get_one(Alert, cause).message.startswith(
            "3 runs of hourly failed in a row: chunk "
        )


def test_two_processes_raising_the_same_cause_at_once_make_one_alert(core: Core) -> None:
    raised: list[bool] = []
    start = threading.Barrier(4)

    def raise_it() -> None:
        start.wait()
        with core.transaction() as session:
            raised.append(alerts.raise_alert(session, "run_failed:x", "run_failed", "m"))

    threads = [threading.Thread(target=raise_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(raised) == [False, False, False, True]
    assert [row[0] for row in stored_alerts(core)] == ["run_failed:x"]


def test_a_schedule_pauses_itself_after_n_failures_and_a_fire_sent_meanwhile_is_skipped(
    core: Core, celery_app: Celery, worker: Path, tmp_path: Path
) -> None:
    add_schedule(core, celery_app, pause_after_failures=2)
    failing = {"n": 400, "fail_chunk": 100}
    first = run_of_schedule(core, celery_app, failing)
    with core.reading() as session:
        assert session.get_one(Schedule, "hourly").enabled
    second = run_of_schedule(core, celery_app, failing)
    with core.reading() as session:
        row = session.get_one(Schedule, "hourly")
        audit = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.before, AuditEntry.after).where(
                AuditEntry.action == "pause"
            )
        ).one()
    why = f"paused after 2 failed runs in a row (the last: run {second.id})"
    assert (row.enabled, row.paused_reason) == (False, why)
    assert audit[:2] == ("batch", "pause")
    assert (audit.before["enabled"], audit.after["enabled"]) == (True, False)
    assert [row[:2] for row in stored_alerts(core)] == [
        ("run_failed:hourly:start", "run_failed"),
        ("paused:hourly:start", "paused"),
    ]
    with core.reading() as session:
        assert session.get_one(Alert, "paused:hourly:start").message.startswith(
            f"hourly {why}; enable it to resume: chunk "
        )

    # Reconcile takes it out of RedBeat; a fire beat sent before that is skipped.
    reconcile(core, celery_app)
    assert not core.redis.exists(BatchEntry.generate_key(celery_app, "hourly"))
    fire_at = datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
    fire = {
        "job": SUMS, "params": {"n": 10}, "trigger": "schedule:hourly", "schedule": "hourly",
        "scheduled_for": fire_at.isoformat(), "overlap": "allow", "deadline_seconds": None,
    }  # fmt: skip
    celery_app.send_task(TASK_START_RUN, kwargs=fire, ignore_result=True)
    skipped = wait_for_run(core, runs.scheduled_run_id("hourly", fire_at))
    assert (skipped.status, skipped.error) == ("skipped", "skipped: schedule hourly is disabled")
    assert first.status == "failed"

    # Enabled again by a person: the reason is gone, and the next success resolves both.
    schedules.set_enabled(core, celery_app, "hourly", True, actor="alice")
    with core.reading() as session:
        assert session.get_one(Schedule, "hourly").paused_reason is None
    assert run_of_schedule(core, celery_app, {"n": 400}).status == "succeeded"
    with core.reading() as session:
        assert alerts.open_alerts(session, 10) == []
