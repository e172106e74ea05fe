"""Schedules: validation, audit, write-through to RedBeat and reconcile (no beat running)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from click.testing import CliRunner
from redbeat.decoder import to_timestamp
from sqlalchemy import func, select

from batch import beat, schedules
from batch.beat import BatchEntry
from batch.cli import main
from batch.core import Core
from batch.cron import CronSchedule
from batch.exceptions import Conflict, InvalidSchedule
from batch.models import AuditEntry, Run, Schedule
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
    counts = beat.reconcile(core, celery_app)
    assert counts == {"schedules": 1, "rewritten": 1, "restored": 1, "removed": 1}
    key = BatchEntry.generate_key(celery_app, "hourly")
    assert BatchEntry.load_meta(key, app=celery_app)["last_run_at"] == last_fire
    # The score is the true next fire after the kept last fire (RedBeat alone scores it
    # too early by now - last_fire).
    score = core.redis.zscore(celery_app.redbeat_conf.schedule_key, key)
    assert score == to_timestamp(last_fire + timedelta(hours=1))
    unchanged = {"schedules": 1, "rewritten": 0, "restored": 0, "removed": 0}
    assert beat.reconcile(core, celery_app) == unchanged
    # An edit made behind reconcile's back (here: straight in SQL) is written on the next pass.
    with core.transaction() as session:
        session.get(Schedule, "hourly").cron = "7 * * * *"
    assert beat.reconcile(core, celery_app)["rewritten"] == 1
    assert BatchEntry.from_key(key, app=celery_app).schedule == CronSchedule("7 * * * *")


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
