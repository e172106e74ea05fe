"""Backfill: one run per past fire, with that fire's params, never two for one fire.

The schedules here are hourly sales summaries: each fire's run sums the hour before its fire
time, so each result is compared with a direct SQL query over that hour. The suite's real
worker runs the runs, and its backfill driver keeps ``max_running`` going.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery
from sqlalchemy import func, select, update

from batch import alerts, backfills, demo, run_ends, runs, schedules
from batch.backfills import Request
from batch.celery_app import close_celery, create_celery
from batch.core import Core
from batch.exceptions import Conflict, NotFound, UserError
from batch.models import QUEUED, RUNNING, AuditEntry, Backfill, Run, Schedule
from batch.runs import scheduled_run_id
from tests.test_cli import cli
from tests.test_jobs import sales_by_sql

END = datetime(2026, 11, 20, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
JOB = "reports.sales_summary"
IDLE = "backfill-idle"


def add_schedule(core: Core, celery: Celery, name: str = "hourly-sales", **fields) -> None:
    data = {"name": name, "job": JOB, "params": {}, "cron": "0 * * * *", **fields}
    spec = schedules.validate_schedule(core, data)
    schedules.save_schedule(core, celery, spec, actor="test", mode="create")


@pytest.fixture
def idle(core: Core) -> Iterator[tuple[Core, Celery]]:
    """A core and app with one more queue, ``idle``, that no worker reads: runs sent there
    stay queued."""
    idle_core = Core(dataclasses.replace(core.settings, queues=(*core.settings.queues, IDLE)))
    app = create_celery(idle_core.settings, idle_core)
    yield idle_core, app
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(IDLE)
    close_celery(app)


def schedule_runs(core: Core, name: str = "hourly-sales") -> list[Run]:
    with core.reading() as session:
        return list(
            session.scalars(
                select(Run).where(Run.schedule_name == name).order_by(Run.scheduled_for)
            )
        )


def wait_done(core: Core, backfill_id: int, most_going: int, timeout: float = 120) -> Backfill:
    """Wait until the backfill is done, checking meanwhile that at most ``most_going`` of its
    runs are ever queued or running at once."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        with core.reading() as session:
            backfill = session.get(Backfill, backfill_id)
            going = session.scalar(
                select(func.count())
                .select_from(Run)
                .where(Run.backfill_id == backfill_id, Run.status.in_((QUEUED, RUNNING)))
            )
            assert backfill is not None
            session.expunge(backfill)
        seen = max(seen, going or 0)
        assert seen <= most_going, f"{seen} runs going at once, limit {most_going}"
        if backfill.state != "running":
            return backfill
        time.sleep(0.02)
    raise AssertionError(f"backfill {backfill_id} not done in {timeout}s")


def assert_exact(core: Core, run: Run) -> None:
    """The run succeeded and its result is its fire's hour, summed by SQL."""
    assert run.status == "succeeded", run.error
    assert run.scheduled_for is not None
    since, until = run.scheduled_for - HOUR, run.scheduled_for
    assert run.params == {"since": since.isoformat().replace("+00:00", "Z"),
                          "until": until.isoformat().replace("+00:00", "Z")}  # fmt: skip
    assert run.result == sales_by_sql(core, since, until)


def test_a_dry_run_lists_each_fire_with_its_window_and_writes_nothing(
    core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app)
    request = Request("hourly-sales", END - 48 * HOUR, END, only="missing")
    plan = backfills.plan_backfill(core, request)
    assert (plan.fires, plan.new, plan.again, plan.left, plan.runs) == (48, 48, 0, 0, 48)
    assert len(plan.listed) == backfills.LISTED_FIRES
    first = plan.listed[0]
    assert first.fire == END - 48 * HOUR and first.action == "new"
    assert first.params["until"] == (END - 48 * HOUR).isoformat().replace("+00:00", "Z")
    assert schedule_runs(core) == []
    with core.reading() as session:
        assert session.scalar(select(func.count()).select_from(Backfill)) == 0


def test_backfill_runs_each_fire_once_with_exact_results_and_again_makes_nothing(
    core: Core, celery_app: Celery, worker
) -> None:
    demo.seed_orders(core.engine, 20_000, end=END)
    add_schedule(core, celery_app)
    since = END - 36 * HOUR
    # One fire already ran (as beat would have run it): the backfill leaves it alone.
    kept = scheduled_run_id("hourly-sales", since + 5 * HOUR)
    with core.transaction() as session:
        session.add(
            Run(id=kept, job=JOB, params={}, status="succeeded", trigger="schedule:hourly-sales",
                schedule_name="hourly-sales", scheduled_for=since + 5 * HOUR, queue="reports",
                result={"kept": True})
        )  # fmt: skip
    request = Request("hourly-sales", since, END, only="missing", max_running=3)

    backfill = backfills.start_backfill(core, celery_app, request, actor="test")
    done = wait_done(core, backfill.id, most_going=3)

    assert (done.state, done.fires, done.fires_done, done.runs_made) == ("done", 36, 36, 35)
    made = schedule_runs(core)
    assert [run.scheduled_for for run in made] == [since + i * HOUR for i in range(36)]
    for run in made:
        if run.id == kept:
            assert run.result == {"kept": True}
            continue
        assert run.id == scheduled_run_id("hourly-sales", run.scheduled_for)
        assert run.backfill_id == backfill.id and run.trigger_kind == "backfill"
        assert_exact(core, run)
    assert sum(run.result.get("orders", 0) for run in made) > 500  # the hours hold orders

    # Again: every fire has its run, so nothing is made and the runs are the same rows.
    assert backfills.plan_backfill(core, request).runs == 0
    again = backfills.start_backfill(core, celery_app, request, actor="test")
    assert wait_done(core, again.id, most_going=0).runs_made == 0
    assert [(r.id, r.status, r.result) for r in schedule_runs(core)] == [
        (r.id, r.status, r.result) for r in made
    ]
    with core.reading() as session:
        audited = session.scalars(select(AuditEntry.action).where(AuditEntry.actor == "test"))
        assert list(audited).count("backfill") == 2


def test_only_failed_replaces_the_failed_runs_and_nothing_else(
    core: Core, celery_app: Celery, worker
) -> None:
    demo.seed_orders(core.engine, 20_000, end=END)
    add_schedule(core, celery_app)
    since = END - 6 * HOUR
    statuses = ["failed", "succeeded", "failed", "skipped", None, "failed"]
    old: dict[datetime, str] = {}
    with core.transaction() as session:
        for i, status in enumerate(statuses):
            if status is None:
                continue
            fire = since + i * HOUR
            old[fire] = scheduled_run_id("hourly-sales", fire)
            session.add(
                Run(id=old[fire], job=JOB, params={}, status=status, queue="reports",
                    trigger="schedule:hourly-sales", schedule_name="hourly-sales",
                    scheduled_for=fire, result={"old": i}, error="boom" if status else None)
            )  # fmt: skip
    request = Request("hourly-sales", since, END, only="failed", max_running=2)
    plan = backfills.plan_backfill(core, request)
    assert (plan.new, plan.again, plan.left) == (0, 3, 3)
    assert [p.replaces for p in plan.listed] == [old[since + i * HOUR] for i in (0, 2, 5)]

    backfill = backfills.start_backfill(core, celery_app, request, actor="test")
    assert wait_done(core, backfill.id, most_going=2).runs_made == 3

    by_fire = {run.scheduled_for: run for run in schedule_runs(core)}
    assert sorted(by_fire) == sorted(old)  # the fire with no run still has none
    for i, status in enumerate(statuses):
        fire = since + i * HOUR
        if status == "failed":
            run = by_fire[fire]
            assert run.id != old[fire] and run.backfill_id == backfill.id
            assert_exact(core, run)
        elif status is not None:
            assert (by_fire[fire].id, by_fire[fire].result) == (old[fire], {"old": i})
    with core.reading() as session:  # the failed runs are gone, with nothing left behind
        gone = [old[since + i * HOUR] for i in (0, 2, 5)]
        assert session.scalar(select(func.count()).where(Run.id.in_(gone))) == 0


def test_an_interval_schedule_is_backfilled_from_the_start_of_the_range(
    core: Core, celery_app: Celery, worker
) -> None:
    data = {"name": "every-20m", "job": "tests.sum_squares", "params": {"n": 300},
            "interval_seconds": 1200}  # fmt: skip
    schedules.save_schedule(
        core, celery_app, schedules.validate_schedule(core, data), actor="test", mode="create"
    )
    since = datetime(2026, 11, 1, 9, 7, tzinfo=UTC)
    request = Request("every-20m", since, since + 2 * HOUR, only="all", max_running=4)
    backfill = backfills.start_backfill(core, celery_app, request, actor="test")
    assert wait_done(core, backfill.id, most_going=4).runs_made == 6
    made = schedule_runs(core, "every-20m")
    assert [run.scheduled_for for run in made] == [since + i * timedelta(minutes=20)
                                                   for i in range(6)]  # fmt: skip
    assert {run.status for run in made} == {"succeeded"}
    assert {run.result["sum"] for run in made} == {299 * 300 * 599 // 6}


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (Request("nope", END - HOUR, END), NotFound, "schedule 'nope' not found"),
        (Request("hourly-sales", END, END - HOUR), UserError, "the range is empty"),
        (Request("hourly-sales", END, datetime(2999, 1, 1, tzinfo=UTC)), UserError, "future"),
        (Request("hourly-sales", END - HOUR, END, only="some"), UserError, "bad only 'some'"),
        (Request("hourly-sales", END - HOUR, END, max_running=0), UserError, "bad max running"),
        (Request("hourly-sales", END - 20 * 366 * 24 * HOUR, END), UserError, "in parts"),
        (Request("hourly-sales", END - 50 * MINUTE, END - 10 * MINUTE), UserError, "no fire"),
    ],  # fmt: skip
)
def test_a_bad_request_says_what_is_wrong_and_writes_nothing(
    core: Core, celery_app: Celery, request_: Request, error: type, message: str
) -> None:
    add_schedule(core, celery_app)
    with pytest.raises(error, match=message):
        backfills.plan_backfill(core, request_)
    with pytest.raises(error, match=message):
        backfills.start_backfill(core, celery_app, request_, actor="test")
    with core.reading() as session:
        assert session.scalar(select(func.count()).select_from(Backfill)) == 0
        assert session.scalar(select(func.count()).select_from(Run)) == 0


def test_a_second_backfill_waits_for_the_first_and_a_cancelled_one_makes_no_more_runs(
    idle: tuple[Core, Celery],
) -> None:
    # No worker reads this schedule's queue: its runs stay queued, so the first stays running.
    core, celery_app = idle
    add_schedule(core, celery_app, queue=IDLE)
    request = Request("hourly-sales", END - 10 * HOUR, END, max_running=2)
    first = backfills.start_backfill(core, celery_app, request, actor="test")
    assert (first.state, first.runs_made, first.fires_done) == ("running", 2, 2)
    with pytest.raises(Conflict, match=f"backfill {first.id} of hourly-sales is still running"):
        backfills.start_backfill(core, celery_app, request, actor="test")
    cancelled = backfills.cancel_backfill(core, first.id, actor="test")
    assert cancelled.state == "cancelled"
    assert backfills.advance(core, celery_app, first.id) == 0
    with pytest.raises(Conflict, match="is cancelled"):
        backfills.cancel_backfill(core, first.id, actor="test")
    assert len(schedule_runs(core)) == 2


def test_a_backfills_runs_neither_alert_nor_block_a_live_fire(idle: tuple[Core, Celery]) -> None:
    core, celery_app = idle
    add_schedule(core, celery_app, queue=IDLE, overlap="skip", alert_after_failures=1)
    request = Request("hourly-sales", END - 10 * HOUR, END, max_running=2)
    backfill = backfills.start_backfill(core, celery_app, request, actor="test")
    with core.transaction() as session:
        going = session.scalars(select(Run.id).where(Run.backfill_id == backfill.id)).all()
        run_ends.finish(session, going[0], "failed", error="boom")
        assert session.scalar(select(func.count()).select_from(alerts.Alert)) == 0
        # A live fire with overlap "skip" is not skipped for the backfill's queued run.
        fire = runs.Fire(schedule="hourly-sales", scheduled_for=END + HOUR, overlap="skip")
        assert runs._skip_reason(session, "live", fire, END + HOUR, True) is None
        assert session.get(Schedule, "hourly-sales") is not None


# The command line


def test_the_cli_dry_run_then_backfill_with_wait_then_again_makes_nothing(
    core: Core, celery_app: Celery, worker
) -> None:
    demo.seed_orders(core.engine, 10_000, end=END)
    add_schedule(core, celery_app)
    span = ["hourly-sales", "--from", "2026-11-19T20:00", "--to", "2026-11-20"]

    code, out, _ = cli(core, "schedules", "backfill", *span, "--dry-run")
    assert code == 0, out
    assert out.splitlines()[:2] == [
        "hourly-sales: 4 fires from 2026-11-19 20:00:00 UTC to 2026-11-20 00:00:00 UTC"
        " (--only missing)",
        "would run 4: 4 new, 0 again; 0 left as they are",
    ]
    assert '"since": "2026-11-19T19:00:00Z", "until": "2026-11-19T20:00:00Z"' in out
    assert schedule_runs(core) == []

    code, out, err = cli(core, "schedules", "backfill", *span, "--max-running", "1", "--wait",
                         "--json")  # fmt: skip
    assert code == 0, err
    state = json.loads(out)
    assert (state["state"], state["fires"], state["runs"]) == ("done", 4, {"succeeded": 4})
    assert "backfill" in err and "4/4 fires looked at" in err
    for run in schedule_runs(core):
        assert_exact(core, run)

    code, out, _ = cli(core, "schedules", "backfill", *span)
    assert code == 0 and out.startswith("backfill ") and "4 fires" in out
    again = int(out.split()[1])
    assert wait_done(core, again, most_going=0).runs_made == 0
    code, out, _ = cli(core, "backfills", "show", str(again))
    assert "state: done" in out and "runs_made: 0" in out
    code, out, _ = cli(core, "backfills", "list", "--schedule", "hourly-sales")
    assert len(out.splitlines()) == 2 and "4 succeeded" in out.splitlines()[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--from", "2026-11-19", "--to", "2026-11-20"], "schedule 'nope' not found"),
        (["hourly-sales", "--from", "yesterday", "--to", "2026-11-20"], "bad from 'yesterday'"),
        (["hourly-sales", "--from", "2026-11-20", "--to", "2026-11-19"], "the range is empty"),
        (["hourly-sales", "--from", "2026-11-20", "--to", "2999-01-01"], "is in the future"),
        (
            ["hourly-sales", "--from", "2026-11-19", "--to", "2026-11-20", "--max-running", "0"],
            "0 is not in the range 1<=x<=100",
        ),
        (
            ["hourly-sales", "--from", "2026-11-19", "--to", "2026-11-20", "--only", "some"],
            "'some' is not one of 'missing', 'failed', 'all'",
        ),
    ],  # fmt: skip
)
def test_the_cli_refuses_bad_input_in_one_line_and_writes_nothing(
    core: Core, celery_app: Celery, args: list[str], message: str
) -> None:
    add_schedule(core, celery_app)
    code, out, err = cli(core, "schedules", "backfill", *args)
    assert code == 2 and message in err and "Traceback" not in err + out, err
    with core.reading() as session:
        assert session.scalar(select(func.count()).select_from(Backfill)) == 0
    code, _, err = cli(core, "backfills", "cancel", "12345")
    assert code == 2 and "no backfill 12345" in err


def test_a_backfill_whose_schedule_no_longer_validates_stops_and_writes_no_run(
    idle: tuple[Core, Celery],
) -> None:
    core, celery_app = idle
    data = {"name": "sums", "job": "tests.sum_squares", "params": {"n": 5}, "cron": "0 * * * *",
            "queue": IDLE}  # fmt: skip
    schedules.save_schedule(
        core, celery_app, schedules.validate_schedule(core, data), actor="t", mode="create"
    )
    request = Request("sums", END - 10 * HOUR, END, max_running=2)
    backfill = backfills.start_backfill(core, celery_app, request, actor="test")
    assert backfill.runs_made == 2
    with core.transaction() as session:  # params the job now refuses (n must be >= 0)
        session.execute(update(Schedule).where(Schedule.name == "sums").values(params={"n": -1}))
        session.execute(update(Run).where(Run.backfill_id == backfill.id).values(status="failed"))
    assert backfills.advance(core, celery_app, backfill.id) == 0
    stopped = backfills.get_backfill(core, backfill.id)
    assert (stopped.state, stopped.runs_made) == ("cancelled", 2)
    assert len(schedule_runs(core, "sums")) == 2
