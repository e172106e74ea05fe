"""Schedules as code: the files in schedules/ versus edits made in the admin, the API and the CLI.

An edit is never undone without a command that says it will: ``batch dev`` (only_new) creates
only missing schedules, ``batch schedules import`` applies the files and prints every change,
``batch schedules diff`` shows the drift and writes nothing.
"""

from __future__ import annotations

import getpass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from celery import Celery
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import create_engine, func, inspect, select, text

from batch import migrate, schedules, users
from batch.cli import main
from batch.core import Core
from batch.cron import CronSchedule
from batch.entries import BatchEntry
from batch.models import AuditEntry, Schedule
from batch.schedules import ScheduleChange
from tests.conftest import settings_env
from tests.test_migrations import empty_database  # noqa: F401 (a fixture)

ACTOR = f"cli:{getpass.getuser()}"
HOURLY_TOML = """\
job = "reports.sales_summary"
cron = "5 * * * *"
overlap = "skip"
description = "Sales per region"
"""
NIGHTLY_TOML = """\
job = "tests.sum_squares"
cron = "30 3 * * *"
timezone = "Europe/Berlin"

[params]
n = 30
"""
HOURLY = {
    "name": "hourly",
    "job": "reports.sales_summary",
    "params": {},
    "cron": "5 * * * *",
    "timezone": "UTC",
    "interval_seconds": None,
    "enabled": True,
    "overlap": "skip",
    "queue": None,
    "priority": None,
    "deadline_seconds": None,
    "must_start_within_seconds": None,
    "must_succeed_within_seconds": None,
    "alert_after_failures": 1,
    "pause_after_failures": None,
    "catch_up": "latest",
    "catch_up_window_seconds": 86400,
    "catch_up_max": 10,
    "description": "Sales per region",
}
#: HOURLY as the audit log records it: without the name, with the file it came from.
HOURLY_AUDITED = {k: v for k, v in HOURLY.items() if k != "name"}


@pytest.fixture(autouse=True)
def _no_entries(core: Core) -> None:
    for key in core.redis.scan_iter(match="batch:redbeat:*"):
        core.redis.delete(key)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A schedules folder with hourly.toml and nightly.toml."""
    folder = tmp_path / "schedules"
    folder.mkdir()
    (folder / "hourly.toml").write_text(HOURLY_TOML)
    (folder / "nightly.toml").write_text(NIGHTLY_TOML)
    return folder


def cli(core: Core, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=settings_env(core.settings))
    return result.exit_code, result.stdout, result.stderr


def row_of(core: Core, name: str) -> Schedule:
    with core.reading() as session:
        row = session.get(Schedule, name)
    assert row is not None, name
    return row


def audit(core: Core) -> list[tuple[str, str, str]]:
    with core.reading() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(row.actor, row.action, row.object_name) for row in rows]


def last_audit(core: Core) -> AuditEntry:
    with core.reading() as session:
        entry = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert entry is not None
    return entry


def count(core: Core, model: type) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).select_from(model))


def has_entry(core: Core, celery_app: Celery, name: str) -> bool:
    return bool(core.redis.exists(BatchEntry.generate_key(celery_app, name)))


def admin_edit(core: Core, celery_app: Celery, name: str, actor: str, **changes: Any) -> None:
    """An edit as the admin's form and the API make it: the whole spec, saved as an update."""
    data = {**schedules.schedule_as_dict(row_of(core, name)), **changes}
    spec = schedules.validate_schedule(core, data)
    schedules.save_schedule(core, celery_app, spec, actor=actor, mode="update")


# --- batch dev: only_new --------------------------------------------------------------------------


def test_only_new_keeps_a_disabled_schedule_and_creates_a_missing_one(
    core: Core, celery_app: Celery, files: Path
) -> None:
    first = schedules.import_schedules(
        core, celery_app, files / "hourly.toml", actor="batch dev", only_new=True
    )
    assert [change.describe() for change in first] == ["created hourly"]
    assert cli(core, "schedules", "disable", "hourly") == (0, "disabled hourly\n", "")
    disabled_at = row_of(core, "hourly").updated_at

    changes = schedules.import_schedules(core, celery_app, files, actor="batch dev", only_new=True)

    nightly_source = (files / "nightly.toml").as_posix()
    assert changes == [
        ScheduleChange("hourly", "kept", {"enabled": (False, True)}),
        ScheduleChange(
            "nightly",
            "created",
            {
                "job": (None, "tests.sum_squares"),
                "params": (None, {"n": 30}),
                "cron": (None, "30 3 * * *"),
                "timezone": (None, "Europe/Berlin"),
                "interval_seconds": (None, None),
                "enabled": (None, True),
                "overlap": (None, "allow"),
                "queue": (None, None),
                "priority": (None, None),
                "deadline_seconds": (None, None),
                "must_start_within_seconds": (None, None),
                "must_succeed_within_seconds": (None, None),
                "alert_after_failures": (None, 1),
                "pause_after_failures": (None, None),
                "catch_up": (None, "latest"),
                "catch_up_window_seconds": (None, 86400),
                "catch_up_max": (None, 10),
                "description": (None, ""),
                "source": (None, nightly_source),
            },
        ),
    ]
    assert [change.describe() for change in changes] == [
        "kept hourly (its file would change enabled: false -> true)",
        "created nightly",
    ]
    hourly = row_of(core, "hourly")
    assert (hourly.enabled, hourly.updated_at) == (False, disabled_at)
    assert hourly.source == (files / "hourly.toml").as_posix()
    assert row_of(core, "nightly").source == nightly_source
    assert not has_entry(core, celery_app, "hourly")
    assert has_entry(core, celery_app, "nightly")
    assert audit(core) == [
        ("batch dev", "create", "hourly"),
        (ACTOR, "disable", "hourly"),
        ("batch dev", "create", "nightly"),
    ]


# --- batch schedules import: explicit, prints every change ---------------------------------------


def test_explicit_import_reenables_and_prints_each_change(
    core: Core, celery_app: Celery, files: Path
) -> None:
    assert cli(core, "schedules", "import", str(files)) == (
        0,
        "created hourly\ncreated nightly\n",
        "",
    )
    assert cli(core, "schedules", "disable", "hourly")[0] == 0
    admin_edit(core, celery_app, "hourly", "user:admin", cron="7 * * * *", enabled=False)

    code, out, err = cli(core, "schedules", "import", str(files))

    assert (code, err) == (0, "")
    assert out == (
        'updated hourly: cron: "7 * * * *" -> "5 * * * *"; enabled: false -> true\n'
        "unchanged nightly\n"
    )
    assert schedules.schedule_as_dict(row_of(core, "hourly")) == HOURLY
    entry = BatchEntry.from_key(BatchEntry.generate_key(celery_app, "hourly"), app=celery_app)
    assert entry.schedule == CronSchedule("5 * * * *", "UTC")
    assert audit(core) == [
        (ACTOR, "create", "hourly"),
        (ACTOR, "create", "nightly"),
        (ACTOR, "disable", "hourly"),
        ("user:admin", "update", "hourly"),
        (ACTOR, "update", "hourly"),
    ]
    source = (files / "hourly.toml").as_posix()
    update = last_audit(core)
    assert update.before == {
        **HOURLY_AUDITED,
        "cron": "7 * * * *",
        "enabled": False,
        "source": source,
    }
    assert update.after == {**HOURLY_AUDITED, "source": source}

    # Once applied, importing again changes nothing and writes no audit entry.
    assert cli(core, "schedules", "import", str(files)) == (
        0,
        "unchanged hourly\nunchanged nightly\n",
        "",
    )
    assert count(core, AuditEntry) == 5


def test_import_records_the_path_as_given_and_edits_keep_it(
    core: Core, celery_app: Celery, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files.parent)
    assert cli(core, "schedules", "import", "schedules/hourly.toml") == (0, "created hourly\n", "")
    assert row_of(core, "hourly").source == "schedules/hourly.toml"
    assert last_audit(core).after == {**HOURLY_AUDITED, "source": "schedules/hourly.toml"}

    admin_edit(core, celery_app, "hourly", "user:admin", description="edited")
    assert row_of(core, "hourly").source == "schedules/hourly.toml"

    # The default PATH is schedules/. The path is stored as given: another spelling of the
    # same file is recorded by an import, and is no drift for diff.
    assert cli(core, "schedules", "import") == (
        0,
        'updated hourly: description: "edited" -> "Sales per region"\ncreated nightly\n',
        "",
    )
    assert cli(core, "schedules", "diff", str(files)) == (0, "", "")
    code, out, _ = cli(core, "schedules", "import", str(files))
    assert (code, out) == (
        0,
        f'updated hourly: source: "schedules/hourly.toml" -> "{files.as_posix()}/hourly.toml"\n'
        f'updated nightly: source: "schedules/nightly.toml" -> "{files.as_posix()}/nightly.toml"\n',
    )
    # Nor is it drift for batch dev: what it keeps differs from its file in nothing.
    kept = schedules.import_schedules(
        core, celery_app, Path("schedules"), actor="batch dev", only_new=True
    )
    assert kept == [ScheduleChange("hourly", "kept"), ScheduleChange("nightly", "kept")]


# --- batch schedules diff ------------------------------------------------------------------------


def test_diff_shows_drift_field_by_field_exits_1_and_writes_nothing(
    core: Core, celery_app: Celery, files: Path
) -> None:
    assert cli(core, "schedules", "diff", str(files)) == (
        1,
        "would create hourly\nwould create nightly\n",
        "",
    )
    assert count(core, Schedule) == count(core, AuditEntry) == 0
    assert cli(core, "schedules", "import", str(files))[0] == 0
    assert cli(core, "schedules", "diff", str(files)) == (0, "", "")

    assert cli(core, "schedules", "disable", "hourly")[0] == 0
    admin_edit(core, celery_app, "hourly", "api:tests", priority=3, description="Sales, by hand")
    admin_edit(core, celery_app, "nightly", "user:admin", params={"n": 31})
    before = {name: schedules.snapshot(row_of(core, name)) for name in ("hourly", "nightly")}
    audited = count(core, AuditEntry)

    code, out, err = cli(core, "schedules", "diff", str(files))

    assert (code, err) == (1, "")
    assert out == (
        "would update hourly: enabled: false -> true; priority: 3 -> null;"
        ' description: "Sales, by hand" -> "Sales per region"\n'
        'would update nightly: params: {"n": 31} -> {"n": 30}\n'
    )
    assert {name: schedules.snapshot(row_of(core, name)) for name in before} == before
    assert count(core, AuditEntry) == audited
    assert not has_entry(core, celery_app, "hourly")
    # One file: only its schedule is compared.
    assert cli(core, "schedules", "diff", str(files / "nightly.toml")) == (
        1,
        'would update nightly: params: {"n": 31} -> {"n": 30}\n',
        "",
    )


# --- Bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", ["import", "diff"])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('job = "reports.sales_summary"\ncron = "0 25 * * *"\n', "b.toml: cron: bad cron line"),
        (
            'job = "reports.sales_summary"\ncron = "0 * * * *"\ncolour = "red"\n',
            "b.toml: colour: not a known field",
        ),
        (
            'name = "hourly"\njob = "reports.sales_summary"\ncron = "0 * * * *"\n',
            "hourly.toml: name: 'hourly' is also in {folder}/b.toml",
        ),
        ("job = ", "{folder}/b.toml: not valid TOML"),
    ],
)
def test_a_bad_file_is_one_line_exit_2_and_nothing_is_written(
    core: Core, celery_app: Celery, files: Path, subcommand: str, bad: str, message: str
) -> None:
    (files / "b.toml").write_text(bad)
    code, out, err = cli(core, "schedules", subcommand, str(files))
    assert (code, out) == (2, "")
    assert err.startswith(f"error: invalid schedule: {message.format(folder=files.as_posix())}")
    assert err.count("\n") == 1
    assert count(core, Schedule) == count(core, AuditEntry) == 0
    assert list(core.redis.scan_iter(match="batch:redbeat:*")) == []


@pytest.mark.parametrize("subcommand", ["import", "diff"])
def test_a_missing_path_is_one_line_exit_2(core: Core, tmp_path: Path, subcommand: str) -> None:
    missing = tmp_path / "nope"
    assert cli(core, "schedules", subcommand, str(missing)) == (
        2,
        "",
        f"error: invalid schedule: path: {missing} does not exist\n",
    )


# --- The JSON API -------------------------------------------------------------------------------


def test_an_api_client_that_puts_back_what_it_got_keeps_the_source(
    app: Flask, core: Core, celery_app: Celery, files: Path
) -> None:
    schedules.import_schedules(core, celery_app, files, actor="deploy")
    api = app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {users.add_token(core, 'tests')}"
    got = api.get("/api/schedules/hourly").json
    assert got == HOURLY  # no "source": what GET gives, PUT takes back

    response = api.put("/api/schedules/hourly", json={**got, "enabled": False})

    assert (response.status_code, response.json) == (200, {**HOURLY, "enabled": False})
    assert row_of(core, "hourly").source == (files / "hourly.toml").as_posix()
    assert audit(core)[-1] == ("api:tests", "update", "hourly")
    assert cli(core, "schedules", "diff", str(files)) == (
        1,
        "would update hourly: enabled: false -> true\n",
        "",
    )


# --- The migration --------------------------------------------------------------------------------


def test_migration_0004_adds_an_empty_source_and_downgrades_without_it(
    empty_database: str,  # noqa: F811 (the fixture imported above)
) -> None:
    migrate.upgrade(empty_database, "0003")
    engine = create_engine(empty_database)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO schedules (name, job, params, cron, timezone, enabled, overlap,"
                    " description, created_at, updated_at) VALUES ('old', 'reports.sales_summary',"
                    " '{}', '5 * * * *', 'UTC', true, 'allow', '', :at, :at)"
                ),
                {"at": datetime(2026, 11, 25, 12, 0)},
            )
        migrate.upgrade(empty_database)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT name, source FROM schedules")).all()
        assert [tuple(row) for row in rows] == [("old", None)]
        command.downgrade(migrate.alembic_config(empty_database), "0003")
        engine.dispose()
        columns = {column["name"] for column in inspect(engine).get_columns("schedules")}
        assert "source" not in columns and "description" in columns
        with engine.connect() as connection:
            assert connection.execute(text("SELECT name FROM schedules")).scalars().all() == ["old"]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (lambda folder: (folder / "latin1.toml").write_bytes(b'cron = "0 * * * *" # caf\xe9\n'),
         "latin1.toml: not UTF-8 text (byte 24)"),
        (lambda folder: (folder / "folder.toml").mkdir(), "folder.toml: not a file"),
        (lambda folder: (folder / "again.toml").write_text(HOURLY_TOML + 'name = "hourly"\n'),
         "hourly.toml: name: 'hourly' is also in"),
    ],
)  # fmt: skip
def test_a_bad_file_in_an_import_is_one_error_line_and_nothing_is_stored(
    core: Core, files: Path, make_bad: Any, message: str
) -> None:
    make_bad(files)
    code, out, err = cli(core, "schedules", "import", str(files))
    assert (code, out) == (2, "")  # the CLI's user-error code
    assert err.startswith("error: invalid schedule: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1
    with core.reading() as session:
        assert session.scalar(select(func.count()).select_from(Schedule)) == 0
    assert list(core.redis.scan_iter(match="batch:redbeat:*")) == []
