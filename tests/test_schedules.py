"""Schedules: validation, audit, write-through to RedBeat and reconcile (no beat running)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from click.testing import CliRunner
from redbeat.decoder import to_timestamp
from sqlalchemy import delete, func, select

from batch import schedules
from batch.cli import main
from batch.constants import RECONCILED_REVISION_KEY
from batch.core import Core
from batch.cron import CronSchedule
from batch.entries import BatchEntry
from batch.exceptions import Conflict, InvalidSchedule
from batch.models import AuditEntry, Run, Schedule, ScheduleChange
from batch.reconcile import reconcile
from tests.conftest import ROOT, settings_env

HOURLY = {"name": "hourly", "job": "reports.sales_summary", "cron": "5 * * * *"}


def redbeat_keys(core: Core) -> list[str]:
    return sorted(core.redis.scan_iter(match="batch:redbeat:*"))


def clear_redbeat(core: Core) -> None:
    for key in redbeat_keys(core):
        core.redis.delete(key)


@pytest.fixture(autouse=True)
def _no_entries(core: Core) -> None:
    clear_redbeat(core)


@pytest.fixture
def no_schedules(core: Core) -> None:
    """No schedule, no change note, and a Redis that has reached no revision."""
    with core.transaction() as session:
        session.execute(delete(Schedule))
        session.execute(delete(ScheduleChange))
    core.redis.delete(RECONCILED_REVISION_KEY)


def count(core: Core, model: type) -> int:
    with core.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"timezone": "Moon/Base"}, "timezone"),
        ({"job": "reports.nope"}, "job"),
        ({"params": {"since": "yesterday"}}, "params.since"),
        ({"params": {"unknown": 1}}, "params.unknown"),
        ({"params": {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}}, "params"),
        ({"cron": None, "interval_seconds": 0}, "interval_seconds"),
        ({"interval_seconds": 60}, "cron"),
        ({"name": "bad name!"}, "name"),
        ({"name": "preview"}, "name"),
        ({"cron": None, "interval_seconds": 60, "timezone": "Mars/Base"}, "timezone"),
        ({"deadline_seconds": 2**31}, "deadline_seconds"),
        ({"overlap": "sometimes"}, "overlap"),
    ],
)
def test_bad_schedule_is_rejected_and_nothing_changes(
    core: Core, celery_app: Celery, changes: dict, field: str
) -> None:
    with pytest.raises(InvalidSchedule) as raised:
        schedules.validate_schedule(core, {**HOURLY, **changes})
    assert field in raised.value.errors
    assert count(core, Schedule) == count(core, AuditEntry) == 0
    assert redbeat_keys(core) == []


def test_every_problem_is_reported_at_once(core: Core) -> None:
    bad = {**HOURLY, "cron": "61 * * * *", "params": {"since": "soon"}, "priority": 12}
    with pytest.raises(InvalidSchedule) as raised:
        schedules.validate_schedule(core, bad)
    assert sorted(raised.value.errors) == ["cron", "params.since", "priority"]


def test_duplicate_create_is_a_conflict(core: Core, celery_app: Celery) -> None:
    spec = schedules.validate_schedule(core, HOURLY)
    schedules.save_schedule(core, celery_app, spec, actor="alice", mode="create")
    with pytest.raises(Conflict):
        schedules.save_schedule(core, celery_app, spec, actor="bob", mode="create")
    assert count(core, AuditEntry) == 1


def test_changes_are_audited_and_written_through(core: Core, celery_app: Celery) -> None:
    spec = schedules.validate_schedule(core, HOURLY)
    schedules.save_schedule(core, celery_app, spec, actor="alice", mode="create")
    key = BatchEntry.generate_key(celery_app, "hourly")
    entry = BatchEntry.from_key(key, app=celery_app)
    assert entry.schedule == CronSchedule("5 * * * *", "UTC")
    assert entry.options == {"queue": "reports"}
    assert core.redis.zscore(celery_app.redbeat_conf.schedule_key, key) == to_timestamp(
        entry.schedule.next_after(entry.last_run_at)
    )
    schedules.set_enabled(core, celery_app, "hourly", False, actor="bob")
    assert not core.redis.exists(key)
    schedules.set_enabled(core, celery_app, "hourly", True, actor="bob")
    assert core.redis.exists(key)
    schedules.remove_schedule(core, celery_app, "hourly", actor="carol")
    assert redbeat_keys(core) == []
    with core.transaction() as session:
        trail = session.execute(
            select(AuditEntry.actor, AuditEntry.action).order_by(AuditEntry.id)
        ).all()
        last = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert trail == [
        ("alice", "create"),
        ("bob", "disable"),
        ("bob", "enable"),
        ("carol", "delete"),
    ]
    assert last.before["cron"] == "5 * * * *" and last.after is None


@pytest.mark.usefixtures("no_schedules")
def test_reconcile_restores_flushed_entries_with_their_last_fire(
    core: Core, celery_app: Celery
) -> None:
    spec = schedules.validate_schedule(core, HOURLY)
    schedules.save_schedule(core, celery_app, spec, actor="test", mode="create")
    last_fire = CronSchedule("5 * * * *").latest_due(None, datetime.now(UTC)) - timedelta(hours=2)
    with core.transaction() as session:
        session.add(
            Run(
                id="r1", job="reports.sales_summary", params={}, status="succeeded",
                trigger="schedule:hourly", schedule_name="hourly", scheduled_for=last_fire,
                queue="reports",
            )
        )  # fmt: skip
    clear_redbeat(core)
    stale = BatchEntry.generate_key(celery_app, "gone")
    core.redis.zadd(celery_app.redbeat_conf.schedule_key, {stale: 1})
    counts = reconcile(core, celery_app)
    # No revision reached in this Redis yet: a full pass.
    assert counts == {"pass": "full", "schedules": 1, "rewritten": 1, "restored": 1, "removed": 1}
    key = BatchEntry.generate_key(celery_app, "hourly")
    assert BatchEntry.load_meta(key, app=celery_app)["last_run_at"] == last_fire
    # The score is the true next fire after the kept last fire (RedBeat alone scores it
    # too early by now - last_fire).
    score = core.redis.zscore(celery_app.redbeat_conf.schedule_key, key)
    assert score == to_timestamp(last_fire + timedelta(hours=1))
    unchanged = {"pass": "full", "schedules": 1, "rewritten": 0, "restored": 0, "removed": 0}
    assert reconcile(core, celery_app, full=True) == unchanged
    # An edit made behind batch's back (here: straight in SQL) leaves no change note: the
    # changes pass does not see it, the next full pass writes it.
    with core.transaction() as session:
        session.get(Schedule, "hourly").cron = "7 * * * *"
    assert reconcile(core, celery_app)["rewritten"] == 0
    assert reconcile(core, celery_app, full=True)["rewritten"] == 1
    assert BatchEntry.from_key(key, app=celery_app).schedule == CronSchedule("7 * * * *")


def changes_in_sql(core: Core) -> list[tuple[int, str]]:
    with core.reading() as session:
        query = select(ScheduleChange.revision, ScheduleChange.name)
        return [tuple(row) for row in session.execute(query.order_by(ScheduleChange.revision))]


@pytest.mark.usefixtures("no_schedules")
def test_the_changes_pass_follows_what_changed_and_nothing_else(
    core: Core, celery_app: Celery
) -> None:
    for name in ("a", "b", "c"):
        spec = schedules.validate_schedule(core, {**HOURLY, "name": name})
        schedules.save_schedule(core, celery_app, spec, actor="test", mode="create")
    assert [name for _, name in changes_in_sql(core)] == ["a", "b", "c"]
    assert reconcile(core, celery_app)["pass"] == "full"  # a Redis that has reached nothing
    # The full pass pruned the notes it covered, all but the newest.
    newest = changes_in_sql(core)
    assert [name for _, name in newest] == ["c"]
    assert core.redis.get(RECONCILED_REVISION_KEY) == str(newest[0][0])
    nothing = {"pass": "changes", "schedules": 0, "rewritten": 0, "restored": 0, "removed": 0}
    assert reconcile(core, celery_app) == nothing
    # Write-throughs that did not reach Redis (a process killed between its commit and its
    # Redis write, played here by undoing the write): an edit of b and the deletion of c.
    spec = schedules.validate_schedule(core, {**HOURLY, "name": "b", "cron": "9 * * * *"})
    schedules.save_schedule(core, celery_app, spec, actor="test", mode="update")
    key_b = BatchEntry.generate_key(celery_app, "b")
    core.redis.hset(
        key_b, "definition", core.redis.hget(BatchEntry.generate_key(celery_app, "a"), "definition")
    )
    before_c = {
        field: value
        for field, value in core.redis.hgetall(BatchEntry.generate_key(celery_app, "c")).items()
    }
    schedules.remove_schedule(core, celery_app, "c", actor="test")
    key_c = BatchEntry.generate_key(celery_app, "c")
    core.redis.hset(key_c, mapping=before_c)
    core.redis.zadd(celery_app.redbeat_conf.schedule_key, {key_c: 1})
    counts = reconcile(core, celery_app)
    assert counts == {
        "pass": "changes",
        "schedules": 1,
        "rewritten": 1,
        "restored": 0,
        "removed": 1,
    }
    assert BatchEntry.from_key(key_b, app=celery_app).schedule == CronSchedule("9 * * * *")
    assert not core.redis.exists(key_c)
    assert core.redis.zscore(celery_app.redbeat_conf.schedule_key, key_c) is None
    assert reconcile(core, celery_app) == nothing


@pytest.mark.usefixtures("no_schedules")
def test_a_redis_older_than_the_oldest_note_gets_a_full_pass(
    core: Core, celery_app: Celery
) -> None:
    for name in ("a", "b"):
        spec = schedules.validate_schedule(core, {**HOURLY, "name": name})
        schedules.save_schedule(core, celery_app, spec, actor="test", mode="create")
    reconcile(core, celery_app)
    # A Redis restored from a copy made before that pass: the notes between are pruned.
    kept = changes_in_sql(core)[0][0]
    core.redis.set(RECONCILED_REVISION_KEY, kept - 1)  # short of nothing pruned
    assert reconcile(core, celery_app)["pass"] == "changes"
    core.redis.set(RECONCILED_REVISION_KEY, kept - 2)
    assert reconcile(core, celery_app)["pass"] == "full"
    core.redis.delete(RECONCILED_REVISION_KEY)  # as a flush leaves it
    assert reconcile(core, celery_app)["pass"] == "full"
    assert reconcile(core, celery_app)["pass"] == "changes"


def cli(core: Core, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=settings_env(core.settings))
    return result.exit_code, result.stdout, result.stderr


def test_cli_imports_the_shipped_schedules(core: Core, celery_app: Celery) -> None:
    code, out, _ = cli(core, "schedules", "import", str(ROOT / "schedules"))
    assert (code, out) == (0, "created hourly-sales-summary\ncreated nightly-purge-runs\n")
    code, out, _ = cli(core, "schedules", "list")
    assert "hourly-sales-summary" in out and "nightly-purge-runs" in out
    with core.transaction() as session:
        stored = session.execute(select(Schedule.name, Schedule.source).order_by(Schedule.name))
        assert stored.all() == [
            ("hourly-sales-summary", f"{ROOT}/schedules/hourly-sales-summary.toml"),
            ("nightly-purge-runs", f"{ROOT}/schedules/nightly-purge-runs.toml"),
        ]
    assert len(redbeat_keys(core)) == 3  # two entries and the schedule zset
    code, _, _ = cli(core, "schedules", "disable", "nightly-purge-runs")
    assert code == 0 and len(redbeat_keys(core)) == 2


def test_cli_rejects_a_bad_file_with_one_line_and_writes_nothing(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    (tmp_path / "good.toml").write_text('job = "reports.sales_summary"\ncron = "0 * * * *"\n')
    (tmp_path / "bad.toml").write_text('job = "reports.sales_summary"\ncron = "0 25 * * *"\n')
    code, out, err = cli(core, "schedules", "import", str(tmp_path))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: invalid schedule: bad.toml: cron")
    assert count(core, Schedule) == count(core, AuditEntry) == 0
    assert redbeat_keys(core) == []
    code, _, err = cli(core, "schedules", "remove", "nope")
    assert (code, err) == (2, "error: schedule 'nope' not found\n")


def test_schedule_listing_shows_json_params(core: Core, celery_app: Celery) -> None:
    spec = schedules.validate_schedule(
        core,
        {
            **HOURLY,
            "params": {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00+00:00"},
        },
    )
    schedules.save_schedule(core, celery_app, spec, actor="t", mode="create")
    with core.transaction() as session:
        row = session.get(Schedule, "hourly")
    assert json.dumps(row.params) == (
        '{"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"}'
    )


def test_priority_9_is_served_first_on_every_broker(core: Core) -> None:
    from dataclasses import replace

    from batch.celery_app import close_celery, create_celery, message_priority

    on_redis = create_celery(replace(core.settings, broker_url=""))
    on_amqp = create_celery(replace(core.settings, broker_url="amqp://guest@127.0.0.1:5672//"))
    try:
        spec = schedules.validate_schedule(core, {**HOURLY, "priority": 7})
        schedules.save_schedule(core, on_redis, spec, actor="t", mode="create")
        key = BatchEntry.generate_key(on_redis, "hourly")
        # kombu's Redis transport serves lower numbers first; RabbitMQ higher ones.
        assert BatchEntry.from_key(key, app=on_redis).options == {"queue": "reports", "priority": 2}
        assert (message_priority(on_redis, 7), message_priority(on_amqp, 7)) == (2, 7)
    finally:
        close_celery(on_redis)
        close_celery(on_amqp)
