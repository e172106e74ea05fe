"""A fleet of schedules: bulk import, list filters and bulk enable/disable (real Redis and SQL)."""

from __future__ import annotations

import getpass
import json
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import Engine, event, func, select

from batch import schedule_lists, schedules
from batch.cli import main
from batch.core import Core
from batch.entries import BatchEntry
from batch.exceptions import NotFound
from batch.models import AuditEntry, Schedule, ScheduleChange
from tests.conftest import settings_env

ACTOR = f"cli:{getpass.getuser()}"
MANY = 2_000
#: What statements_on records when a transaction begins.
BEGIN = "BEGIN (a transaction)"


@pytest.fixture(autouse=True)
def _no_entries(core: Core) -> None:
    for key in core.redis.scan_iter(match="batch:redbeat:*"):
        core.redis.delete(key)


def cli(core: Core, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=settings_env(core.settings), input=input)
    return result.exit_code, result.stdout, result.stderr


def toml(index: int, *, minute: int | None = None) -> str:
    """Every third a cleanup (queue cleanups, params), the rest sales summaries."""
    minute = index % 60 if minute is None else minute
    if index % 3 == 0:
        return (
            f'job = "cleanups.purge_runs"\ncron = "{minute} 3 * * *"\n'
            "[params]\nolder_than_days = 30\n"
        )
    return f'job = "reports.sales_summary"\ncron = "{minute} * * * *"\n'


def write_many(folder: Path, count: int = MANY) -> Path:
    folder.mkdir(exist_ok=True)
    for index in range(count):
        (folder / f"s-{index:05d}.toml").write_text(toml(index))
    return folder


def redbeat_snapshot(core: Core) -> dict[str, Any]:
    """Every RedBeat key with its content: hashes, and the zset with its scores."""
    snapshot: dict[str, Any] = {}
    for key in core.redis.scan_iter(match="batch:redbeat:*"):
        kind = core.redis.type(key)
        snapshot[key] = (
            core.redis.zrange(key, 0, -1, withscores=True)
            if kind == "zset"
            else core.redis.hgetall(key)
        )
    return snapshot


def counts(core: Core) -> tuple[int, int, int]:
    with core.reading() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model))
            for model in (Schedule, AuditEntry, ScheduleChange)
        )


def change_notes(core: Core, after: int) -> list[str]:
    with core.reading() as session:
        query = select(ScheduleChange.name).where(ScheduleChange.revision > after)
        return list(session.scalars(query.order_by(ScheduleChange.revision)))


def newest_revision(core: Core) -> int:
    with core.reading() as session:
        return session.scalar(select(func.max(ScheduleChange.revision))) or 0


def writing_transactions(statements: list[str]) -> list[list[str]]:
    """The transactions among ``statements`` that change something, each without its reads
    (on PostgreSQL reads go through the writing engine too, in transactions of their own)."""
    transactions: list[list[str]] = []
    for statement in statements:
        if statement == BEGIN or not transactions:
            transactions.append([])
        if statement != BEGIN and statement.split()[0] in ("INSERT", "UPDATE", "DELETE"):
            transactions[-1].append(statement)
    return [transaction for transaction in transactions if transaction]


@contextmanager
def statements_on(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` sends meanwhile, and BEGIN for each transaction."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2] if len(args) > 2 else BEGIN)

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "begin", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "begin", record)


def seed(core: Core, celery_app: Celery, tmp_path: Path, count: int = 12) -> None:
    """``count`` schedules s-00000.. imported (every third a cleanup)."""
    schedules.import_schedules(core, celery_app, write_many(tmp_path / "s", count), actor="seed")


# --- import --------------------------------------------------------------------------------------


def test_importing_many_files_writes_each_once_and_again_writes_nothing(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    folder = write_many(tmp_path / "schedules")
    revision = newest_revision(core)

    changes = schedules.import_schedules(core, celery_app, folder, actor="deploy")

    names = [f"s-{index:05d}" for index in range(MANY)]
    assert [(c.name, c.action) for c in changes] == [(name, "created") for name in names]
    with core.reading() as session:
        rows = {row.name: row for row in session.scalars(select(Schedule))}
        audit = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    assert sorted(rows) == names
    assert schedules.schedule_as_dict(rows["s-00003"]) == {
        "name": "s-00003", "job": "cleanups.purge_runs", "params": {"older_than_days": 30},
        "cron": "3 3 * * *", "timezone": "UTC", "interval_seconds": None, "enabled": True,
        "overlap": "allow", "queue": None, "priority": None, "deadline_seconds": None,
        "must_start_within_seconds": None, "must_succeed_within_seconds": None,
        "alert_after_failures": 1, "pause_after_failures": None, "catch_up": "latest",
        "catch_up_window_seconds": 86400, "catch_up_max": 10, "description": "",
    }  # fmt: skip
    assert rows["s-00004"].source == (folder / "s-00004.toml").as_posix()
    assert [(a.actor, a.action, a.object_name, a.before) for a in audit] == [
        ("deploy", "create", name, None) for name in names
    ]
    assert audit[4].after == schedules.snapshot(rows["s-00004"])
    assert change_notes(core, revision) == names
    entry = BatchEntry.from_key(BatchEntry.generate_key(celery_app, "s-00003"), app=celery_app)
    assert (entry.schedule.cron, entry.options["queue"]) == ("3 3 * * *", "cleanups")
    assert entry.kwargs["params"] == {"older_than_days": 30}
    assert entry.score == entry.due_at.timestamp()
    assert core.redis.zcard(celery_app.redbeat_conf.schedule_key) == MANY

    # Nothing changed: no SQL write, no audit entry, no change note, Redis untouched.
    before_counts, before_redis = counts(core), redbeat_snapshot(core)
    with statements_on(core.engine) as written:
        again = schedules.import_schedules(core, celery_app, folder, actor="deploy")
    assert {c.action for c in again} == {"unchanged"}
    assert writing_transactions(written) == []  # no write, not even a transaction for one
    assert counts(core) == before_counts
    assert redbeat_snapshot(core) == before_redis


def test_reimport_writes_only_what_changed_and_keeps_last_fire_times(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    folder = write_many(tmp_path / "schedules", 300)
    schedules.import_schedules(core, celery_app, folder, actor="deploy")
    key = BatchEntry.generate_key(celery_app, "s-00001")
    meta = core.redis.hget(key, "meta")
    schedules.set_enabled(core, celery_app, "s-00002", False, actor="user:admin")
    (folder / "s-00001.toml").write_text(toml(1, minute=59))
    audited, revision, untouched = counts(core)[1], newest_revision(core), redbeat_snapshot(core)

    with statements_on(core.engine) as written:
        changes = schedules.import_schedules(core, celery_app, folder, actor="deploy")

    # One transaction: the two schedules, their audit entries, their change notes.
    (transaction,) = writing_transactions(written)
    assert [" ".join(line.split()[:3]) for line in dict.fromkeys(transaction)] == [
        "UPDATE schedules SET",
        "INSERT INTO audit_log",
        "INSERT INTO schedule_changes",
    ]
    assert [c.describe() for c in changes if c.action != "unchanged"] == [
        'updated s-00001: cron: "1 * * * *" -> "59 * * * *"',
        "updated s-00002: enabled: false -> true",
    ]
    assert counts(core)[1] == audited + 2
    assert change_notes(core, revision) == ["s-00001", "s-00002"]
    assert core.redis.hget(key, "meta") == meta  # its last fire time is kept
    entry = BatchEntry.from_key(key, app=celery_app)
    assert entry.schedule.cron == "59 * * * *"
    assert core.redis.exists(BatchEntry.generate_key(celery_app, "s-00002"))
    now = redbeat_snapshot(core)
    changed = {k for k in now if k.endswith(("s-00001", "s-00002"))}
    assert {k: v for k, v in now.items() if k not in changed and "::" not in k} == {
        k: v for k, v in untouched.items() if k not in changed and "::" not in k
    }


def parsed_again(core: Core, folder: Path) -> list[str]:
    """The files an import of ``folder`` would parse (and validate) again now."""
    with core.reading() as session:
        imported = schedules.imported_digests(session)
    files = schedules.load_schedule_files(core, folder, imported=imported)
    return [file.name for file in files if file.spec is not None]


def test_an_unchanged_file_is_not_parsed_again_until_it_or_its_row_changes(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    folder = write_many(tmp_path / "schedules", 30)
    schedules.import_schedules(core, celery_app, folder, actor="deploy")
    with core.reading() as session:
        digests = dict(session.execute(select(Schedule.name, Schedule.source_digest)).all())
    assert len(set(digests.values())) == 30 and None not in digests.values()
    assert parsed_again(core, folder) == []

    (folder / "s-00001.toml").write_text(toml(1, minute=59))  # the file changes
    schedules.set_enabled(core, celery_app, "s-00002", False, actor="user:admin")
    spec = schedules.validate_schedule(core, {"name": "s-00004", **tomllib.loads(toml(4))})
    spec.description = "edited in the admin"
    schedules.save_schedule(core, celery_app, spec, actor="user:admin")
    spec.description = ""  # and edited back to what its file says
    schedules.save_schedule(core, celery_app, spec, actor="user:admin")
    assert parsed_again(core, folder) == ["s-00001", "s-00002", "s-00004"]

    changes = schedules.import_schedules(core, celery_app, folder, actor="deploy")
    assert [c.describe() for c in changes if c.action != "unchanged"] == [
        'updated s-00001: cron: "1 * * * *" -> "59 * * * *"',
        "updated s-00002: enabled: false -> true",
    ]
    # s-00004 matched its file again: its digest alone was written back.
    assert parsed_again(core, folder) == []
    with statements_on(core.engine) as written:
        again = schedules.import_schedules(core, celery_app, folder, actor="deploy")
    assert {c.action for c in again} == {"unchanged"} and writing_transactions(written) == []


def test_what_validation_depends_on_changing_parses_every_file_again(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    folder = write_many(tmp_path / "schedules", 6)
    schedules.import_schedules(core, celery_app, folder, actor="deploy")
    other_queues = Core(replace(core.settings, queues=(*core.settings.queues, "extra")))
    try:
        assert parsed_again(other_queues, folder) == [f"s-{i:05d}" for i in range(6)]
    finally:
        other_queues.dispose()
    # --revalidate parses every file whatever the digests say, and changes nothing here.
    code, out, _ = cli(core, "schedules", "import", "--revalidate", str(folder))
    assert (code, out.splitlines()) == (0, [f"unchanged s-{i:05d}" for i in range(6)])


def test_only_new_creates_the_missing_in_bulk_and_keeps_the_rest(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    folder = write_many(tmp_path / "schedules", 50)
    (folder / "s-00049.toml").unlink()
    schedules.import_schedules(core, celery_app, folder, actor="deploy")
    schedules.set_enabled(core, celery_app, "s-00001", False, actor="user:admin")
    (folder / "s-00049.toml").write_text(toml(49))
    audited = counts(core)[1]

    changes = schedules.import_schedules(core, celery_app, folder, actor="batch dev", only_new=True)

    assert changes[1] == schedules.ScheduleChange("s-00001", "kept", {"enabled": (False, True)})
    assert [c.action for c in changes] == ["kept"] * 49 + ["created"]
    assert counts(core)[1] == audited + 1
    assert not core.redis.exists(BatchEntry.generate_key(celery_app, "s-00001"))


def test_a_bad_file_among_many_is_one_error_and_nothing_is_written(
    core: Core, tmp_path: Path
) -> None:
    folder = write_many(tmp_path / "schedules", 500)
    (folder / "s-00250.toml").write_text('job = "reports.sales_summary"\ncron = "0 25 * * *"\n')
    before = counts(core)

    code, out, err = cli(core, "schedules", "import", str(folder))

    assert (code, out) == (2, "")
    assert err.startswith("error: invalid schedule: s-00250.toml: cron: bad cron line '0 25 * * *'")
    assert err.count("\n") == 1
    assert counts(core) == before
    assert redbeat_snapshot(core) == {}


# --- list ----------------------------------------------------------------------------------------


def test_list_filters_in_sql_limits_and_says_how_many_more(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    seed(core, celery_app, tmp_path)
    schedules.set_enabled_many(core, celery_app, ["s-00003", "s-00004"], False, actor="t")

    def names(*args: str) -> list[str]:
        code, out, err = cli(core, "schedules", "list", *args)
        assert (code, err) == (0, "")
        return [line.split()[0] for line in out.splitlines()]

    assert names("--job", "cleanups.purge_runs") == ["s-00000", "s-00003", "s-00006", "s-00009"]
    assert names("--queue", "cleanups") == names("--job", "cleanups.purge_runs")
    assert names("--disabled") == ["s-00003", "s-00004"]
    assert names("--enabled", "--queue", "cleanups") == ["s-00000", "s-00006", "s-00009"]
    assert names("--search", "S-0001") == ["s-00010", "s-00011"]
    assert names("--search", "%") == names("--search", "_") == names("--search", "/") == []
    assert names("--search", "0%1") == names("--search", "0_1") == []
    assert names("--limit", "3") == ["s-00000", "s-00001", "s-00002", "..."]
    assert cli(core, "schedules", "list", "--limit", "10")[1].splitlines()[-1] == (
        "... and 2 more (of 12; raise --limit or filter)"
    )


def test_list_json_is_the_apis_shape(core: Core, celery_app: Celery, tmp_path: Path) -> None:
    seed(core, celery_app, tmp_path)

    code, out, err = cli(core, "schedules", "list", "--json", "--search", "s-0000", "--limit", "2")

    assert (code, err) == (0, "... and 8 more (of 10; raise --limit or filter)\n")
    with core.reading() as session:
        rows = [schedules.get_schedule(session, name) for name in ("s-00000", "s-00001")]
        assert json.loads(out) == [schedules.schedule_as_dict(row) for row in rows]


def test_find_schedules_pages_by_name_with_the_total(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    seed(core, celery_app, tmp_path)
    where = schedule_lists.ScheduleFilter(job="reports.sales_summary")
    with core.reading() as session:
        page, total = schedule_lists.find_schedules(session, core.jobs, where, limit=3, offset=3)
    assert ([row.name for row in page], total) == (["s-00005", "s-00007", "s-00008"], 8)


# --- bulk enable and disable ---------------------------------------------------------------------


def test_bulk_disable_by_name_is_one_transaction_with_an_entry_per_change(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    seed(core, celery_app, tmp_path)
    schedules.set_enabled(core, celery_app, "s-00002", False, actor="t")
    audited, revision = counts(core)[1], newest_revision(core)

    assert cli(core, "schedules", "disable", "s-00001", "s-00002", "s-00005") == (
        0,
        "disabled s-00001\ndisabled s-00002\ndisabled s-00005\n",
        "",
    )
    assert counts(core)[1] == audited + 2
    assert change_notes(core, revision) == ["s-00001", "s-00005"]
    for name in ("s-00001", "s-00002", "s-00005"):
        assert not core.redis.exists(BatchEntry.generate_key(celery_app, name))
    with core.reading() as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(2))
        assert [(e.actor, e.action, e.object_name) for e in entries] == [
            (ACTOR, "disable", "s-00005"),
            (ACTOR, "disable", "s-00001"),
        ]

    assert cli(core, "schedules", "enable", "s-00001", "s-00005")[0] == 0
    assert core.redis.exists(BatchEntry.generate_key(celery_app, "s-00005"))


def test_a_bad_name_in_a_bulk_change_changes_nothing(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    seed(core, celery_app, tmp_path)
    before, untouched = counts(core), redbeat_snapshot(core)

    assert cli(core, "schedules", "disable", "s-00001", "nope", "bad name!") == (
        2,
        "",
        "error: schedule 'nope', 'bad name!' not found\n",
    )
    with pytest.raises(NotFound):
        schedules.set_enabled_many(core, celery_app, ["s-00001", "nope"], False, actor="t")
    assert counts(core) == before
    assert redbeat_snapshot(core) == untouched


def test_bulk_disable_by_filter_asks_first_and_counts(
    core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    seed(core, celery_app, tmp_path)
    schedules.set_enabled(core, celery_app, "s-00003", False, actor="t")
    before = counts(core)

    assert cli(core, "schedules", "disable", "--job", "cleanups.purge_runs", input="n\n") == (
        1,
        "Disable 4 schedule(s)? [y/N]: n\n",
        "Aborted!\n",
    )
    assert counts(core) == before

    code, out, _ = cli(core, "schedules", "disable", "--queue", "cleanups", input="y\n")
    assert (code, out) == (
        0,
        "Disable 4 schedule(s)? [y/N]: y\ndisabled 3 schedule(s), 1 already disabled\n",
    )
    assert counts(core)[1] == before[1] + 3
    assert cli(
        core, "schedules", "enable", "--search", "s-0000", "--job", "cleanups.purge_runs", "--yes"
    ) == (
        0,
        "enabled 4 schedule(s), 0 already enabled\n",
        "",
    )
    assert cli(core, "schedules", "enable", "--search", "zzz") == (0, "no schedule matches\n", "")


@pytest.mark.parametrize("args", [(), ("s-00001", "--job", "cleanups.purge_runs")])
def test_bulk_enable_needs_names_or_filters_not_both(core: Core, args: tuple[str, ...]) -> None:
    assert cli(core, "schedules", "enable", *args) == (
        2,
        "",
        "error: give either schedule NAMES or filters (--search, --job, --queue)\n",
    )
