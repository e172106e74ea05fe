"""The read-side queries, on rows inserted directly, with exact values."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import event

from batch import queries
from batch.celery_app import close_celery, create_celery
from batch.core import Core
from batch.exceptions import NotFound, UserError
from batch.models import Run, RunChunk, Schedule
from batch.redis_server import free_port
from batch.run_filters import RunFilter, parse_filter

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SALES = "reports.sales_summary"
SUMS = "tests.sum_squares"


def add_run(
    core: Core, run_id: str, *, job: str = SUMS, status: str = "succeeded", minute: int = 0, **kw
) -> None:
    """Insert one run created ``minute`` minutes after T0."""
    created = T0 + timedelta(minutes=minute)
    values: dict[str, Any] = {
        "id": run_id,
        "job": job,
        "params": {"n": minute},
        "status": status,
        "trigger": "test",
        "queue": "default",
        "created_at": created,
        "started_at": created,
        "finished_at": created + timedelta(seconds=3) if status != "running" else None,
        **kw,
    }
    with core.transaction() as session:
        session.add(Run(**values))


def add_chunks(core: Core, run_id: str, statuses: list[str]) -> None:
    with core.transaction() as session:
        for index, status in enumerate(statuses):
            session.add(
                RunChunk(
                    run_id=run_id,
                    chunk_index=index,
                    status=status,
                    attempts=1 + index % 2,
                    error="ValueError: no" if status == "failed" else None,
                    started_at=T0,
                    finished_at=T0 + timedelta(milliseconds=250) if status != "running" else None,
                )
            )


@contextmanager
def statements(core: Core) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements the reading engine runs inside the block."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, params))

    event.listen(core.read_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(core.read_engine, "before_cursor_execute", record)


@pytest.fixture
def mixed(core: Core) -> Core:
    """Ten runs: two jobs, four states, minutes 0..9 (r0 oldest, r9 newest)."""
    plan = [
        (SUMS, "succeeded"),
        (SALES, "succeeded"),
        (SUMS, "failed"),
        (SALES, "failed"),
        (SUMS, "running"),
        (SALES, "succeeded"),
        (SUMS, "succeeded"),
        (SALES, "queued"),
        (SUMS, "failed"),
        (SALES, "succeeded"),
    ]
    triggers = ["schedule:hourly", "user:ann", "api:etl", "cli", "lab"]
    for minute, (job, status) in enumerate(plan):
        trigger = triggers[minute % len(triggers)]
        schedule = "hourly" if trigger.startswith("schedule:") else None
        add_run(
            core,
            f"r{minute}",
            job=job,
            status=status,
            minute=minute,
            trigger=trigger,
            schedule_name=schedule,
        )
    return core


@pytest.mark.parametrize(
    ("job", "status", "expected"),
    [
        (None, None, ["r9", "r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1", "r0"]),
        (SALES, None, ["r9", "r7", "r5", "r3", "r1"]),
        (None, "failed", ["r8", "r3", "r2"]),
        (SUMS, "succeeded", ["r6", "r0"]),
        (SALES, "running", []),
        ("nobody.job", None, []),
    ],
)
def test_list_runs_filters(mixed: Core, job: str | None, status: str | None, expected) -> None:
    with mixed.reading() as session:
        page = queries.list_runs(session, RunFilter(job=job, status=status))
    assert [run.id for run in page.runs] == expected
    assert page.next_cursor is None


AT = T0.isoformat()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"schedule": "hourly"}, ["r5", "r0"]),
        ({"trigger": "schedule"}, ["r5", "r0"]),
        ({"trigger": "user"}, ["r6", "r1"]),
        ({"trigger": "api"}, ["r7", "r2"]),
        ({"trigger": "cli"}, ["r8", "r3"]),
        ({"trigger": "other"}, ["r9", "r4"]),
        ({"since": "2026-03-01T12:03"}, ["r9", "r8", "r7", "r6", "r5", "r4", "r3"]),
        ({"until": "2026-03-01T12:03"}, ["r2", "r1", "r0"]),
        ({"since": "2026-03-01T12:02", "until": "2026-03-01T12:04:00Z"}, ["r3", "r2"]),
        ({"until": "2026-03-01"}, ["r9", "r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1", "r0"]),
        ({"since": "2026-03-02"}, []),
        ({"since": "2026-03-01T13:03+01:00"}, ["r9", "r8", "r7", "r6", "r5", "r4", "r3"]),
        ({"job": SALES, "trigger": "user", "status": "failed"}, []),
        ({"job": SUMS, "trigger": "user"}, ["r6"]),
        ({"status": "failed", "since": "2026-03-01T12:03"}, ["r8", "r3"]),
        ({"schedule": "hourly", "status": "succeeded", "until": "2026-03-01T12:05"}, ["r0"]),
        ({"q": "r"}, "bad run id"),
        ({"q": "r1"}, "bad run id"),
    ],
)
def test_list_runs_combined_filters(mixed: Core, args: dict[str, str], expected) -> None:
    registry = mixed.jobs
    if isinstance(expected, str):
        with pytest.raises(UserError, match=expected):
            parse_filter(args, registry)
        return
    with mixed.reading() as session:
        page = queries.list_runs(session, parse_filter(args, registry))
    assert [run.id for run in page.runs] == expected


def test_list_runs_by_id_prefix(core: Core) -> None:
    ids = ["0a1b2c3d-0000", "0a1b2c3d-0001", "0a1b2c3e-0000", "0a1b2c3"]
    for minute, run_id in enumerate(ids):
        add_run(core, run_id, minute=minute)
    with core.reading() as session:

        def found(prefix: str) -> list[str]:
            return [run.id for run in queries.list_runs(session, RunFilter(prefix)).runs]

        assert found("0a1b2c3d") == ["0a1b2c3d-0001", "0a1b2c3d-0000"]
        assert found("0a1b") == ["0a1b2c3", "0a1b2c3e-0000", "0a1b2c3d-0001", "0a1b2c3d-0000"]
        assert found("0a1b2c3d-0001") == ["0a1b2c3d-0001"]
        assert found("ffff") == []


def test_list_runs_keyset_pages_have_no_gap_or_overlap(core: Core) -> None:
    # Three runs share one timestamp: the id breaks the tie, so no page repeats or skips one.
    for index in range(7):
        add_run(core, f"k{index}", minute=min(index, 3))
    everything = ["k6", "k5", "k4", "k3", "k2", "k1", "k0"]
    seen: list[str] = []
    cursor = None
    with core.reading() as session:
        for expected_size in (3, 3, 1):
            page = queries.list_runs(session, before=cursor, limit=3)
            assert len(page.runs) == expected_size
            seen += [run.id for run in page.runs]
            cursor = page.next_cursor
            if cursor is not None:
                cursor = queries.Cursor.parse(str(cursor))  # as it travels through a URL
    assert seen == everything and cursor is None
    with core.reading() as session:
        exact = queries.list_runs(session, limit=7)
    assert [run.id for run in exact.runs] == everything and exact.next_cursor is None


def test_list_runs_pages_with_filters(mixed: Core) -> None:
    with mixed.reading() as session:
        first = queries.list_runs(session, RunFilter(job=SALES), limit=2)
        second = queries.list_runs(session, RunFilter(job=SALES), before=first.next_cursor, limit=2)
        third = queries.list_runs(session, RunFilter(job=SALES), before=second.next_cursor, limit=2)
    assert [r.id for r in first.runs + second.runs + third.runs] == ["r9", "r7", "r5", "r3", "r1"]
    assert third.next_cursor is None


def test_list_runs_count_chunks_done_of_going_runs_only(core: Core) -> None:
    add_run(core, "going", status="running", chunk_count=4, minute=1)
    add_chunks(core, "going", ["succeeded", "running", "succeeded", "failed"])
    add_run(core, "done", status="succeeded", chunk_count=2)
    add_chunks(core, "done", ["succeeded", "succeeded"])
    with core.reading() as session:
        items = queries.list_runs(session).runs
    assert [(item.id, item.going, item.chunks_done) for item in items] == [
        ("going", True, 2),
        ("done", False, None),
    ]


def test_list_run_items_carry_the_row(mixed: Core) -> None:
    with mixed.reading() as session:
        (item,) = queries.list_runs(session, RunFilter(status="queued")).runs
    assert item.id == "r7" and item.job == SALES and item.trigger == "api:etl"
    assert item.created_at == T0 + timedelta(minutes=7)
    assert item.duration_seconds == 3.0
    assert str(item.cursor) == "2026-03-01T12:07:00+00:00~r7"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: queries.list_runs(s, limit=0), "bad limit 0"),
        (lambda s: queries.list_runs(s, limit=201), "bad limit 201"),
        (lambda s: queries.job_results(s, RunFilter(job=SALES), limit=0), "bad limit 0"),
        (lambda s: queries.run_progress(s, [str(i) for i in range(201)]), "too many run ids"),
    ],
)
def test_bad_arguments_are_user_errors(core: Core, call, message: str) -> None:
    with core.reading() as session, pytest.raises(UserError, match=message):
        call(session)


@pytest.mark.parametrize(
    "text", ["", "x", "2026-01-01T00:00:00", "nodate~id", "2026-01-01~" + "x" * 37]
)
def test_bad_cursors_are_user_errors(text: str) -> None:
    with pytest.raises(UserError, match="bad cursor"):
        queries.Cursor.parse(text)


def test_run_progress_counts_stored_chunks_in_one_query(core: Core) -> None:
    add_run(core, "a", status="running", chunk_count=4)
    add_chunks(core, "a", ["succeeded", "running", "succeeded", "failed"])
    add_run(core, "b", status="queued")
    add_run(core, "c", status="succeeded", chunk_count=2)
    add_chunks(core, "c", ["succeeded", "succeeded"])
    with core.reading() as session, statements(core) as seen:
        progress = queries.run_progress(session, ["a", "b", "c", "missing"])
    assert progress == {
        "a": queries.Progress("running", 2, 4),
        "b": queries.Progress("queued", 0, None),
        "c": queries.Progress("succeeded", 2, 2),
    }
    assert len(seen) == 1
    with core.reading() as session:
        assert queries.run_progress(session, []) == {}


def test_run_detail_lists_chunks_in_order(core: Core) -> None:
    add_run(core, "f", status="failed", chunk_count=3, error="chunk 1: ValueError: no")
    add_chunks(core, "f", ["succeeded", "failed", "running"])
    with core.reading() as session:
        detail = queries.run_detail(session, "f")
    assert detail.run.id == "f" and detail.run.error == "chunk 1: ValueError: no"
    assert [(c.index, c.status, c.attempts, c.error) for c in detail.chunks] == [
        (0, "succeeded", 1, None),
        (1, "failed", 2, "ValueError: no"),
        (2, "running", 1, None),
    ]
    assert detail.chunks[0].duration_seconds == 0.25
    assert detail.chunks_done == 1 and detail.duration_seconds == 3.0
    with core.reading() as session, pytest.raises(NotFound, match="run nope not found"):
        queries.run_detail(session, "nope")


def test_job_results_are_the_newest_succeeded_runs_of_the_job(mixed: Core) -> None:
    with mixed.reading() as session:
        results = queries.job_results(session, RunFilter(job=SALES), limit=2)
        everything = queries.job_results(session, RunFilter(job=SALES))
        latest = queries.latest_results(session, [SALES, SUMS, "cleanups.purge_runs"])
    assert [item.id for item in results] == ["r9", "r5"]
    assert [item.id for item in everything] == ["r9", "r5", "r1"]
    assert results[0].params == {"n": 9} and results[0].result is None
    assert {job: item and item.id for job, item in latest.items()} == {
        SALES: "r9",
        SUMS: "r6",
        "cleanups.purge_runs": None,
    }


def test_runs_going_and_recent_failures(mixed: Core) -> None:
    add_run(mixed, "r10", job=SUMS, status="running", minute=10, chunk_count=3)
    add_chunks(mixed, "r10", ["succeeded", "succeeded", "failed"])
    with mixed.reading() as session, statements(mixed) as seen:
        going = queries.runs_going(session)
    assert len(seen) == 1
    with mixed.reading() as session:
        two = queries.runs_going(session, limit=2)
        failures = queries.recent_failures(session, limit=2)
    assert [(run.id, run.chunks_done) for run in going] == [("r10", 2), ("r7", 0), ("r4", 0)]
    assert [run.id for run in two] == ["r10", "r7"]
    assert [(run.id, run.status) for run in failures] == [("r8", "failed"), ("r3", "failed")]


def test_schedules_due_next_read_the_redbeat_zset(core: Core) -> None:
    client = core.redis
    key = "test-queries:redbeat::schedule"
    client.delete(key)
    due = {"hourly": T0 + timedelta(hours=1), "nightly": T0 + timedelta(hours=12), "soon": T0}
    client.zadd(key, {f"test-queries:redbeat:{name}": at.timestamp() for name, at in due.items()})
    with core.transaction() as session:
        session.add(Schedule(name="soon", job=SALES, params={}, interval_seconds=60))
    try:
        found = queries.schedules_due_next(client, key, "test-queries:redbeat:", limit=2)
        with core.reading() as session:
            found = queries.with_jobs(session, found)
    finally:
        client.delete(key)
    assert [(d.name, d.due_at, d.job) for d in found] == [
        ("soon", T0, SALES),
        ("hourly", T0 + timedelta(hours=1), None),
    ]


def test_queue_lengths_sum_every_priority_list(core: Core) -> None:
    # Another database of the private server: the test worker consumes from database 0.
    # (from_url would let the URL's "/0" win over a db= argument.)
    server = core.redis.connection_pool.connection_kwargs
    client = redis.Redis(host=server["host"], port=server["port"], db=9)
    assert client.connection_pool.connection_kwargs["db"] == 9
    client.flushdb()
    try:
        client.lpush("default", "m1", "m2")
        client.lpush("reports", "m3")
        client.lpush("reports\x06\x163", "m4")
        client.lpush("reports\x06\x169", "m5")
        lengths = queries.queue_lengths(client, ["default", "reports", "cleanups"])
    finally:
        client.flushdb()
        client.close()
    assert lengths == {"default": 2, "reports": 3, "cleanups": 0}


def test_queue_lengths_are_not_available_on_other_brokers(core: Core) -> None:
    celery = create_celery(dataclasses.replace(core.settings, broker_url="memory://"), core)
    try:
        lengths = queries.broker_queue_lengths(celery)
    finally:
        close_celery(celery)
    assert lengths == {"default": "n/a", "reports": "n/a", "cleanups": "n/a"}


def test_broker_queue_lengths_of_a_missing_queue_is_zero(core: Core) -> None:
    celery = create_celery(core.settings, core)
    try:
        lengths = queries.broker_queue_lengths(celery, ["no-such-queue"])
    finally:
        close_celery(celery)
    assert lengths == {"no-such-queue": 0}


@pytest.mark.parametrize(
    ("kwargs", "index"),
    [
        ({}, "ix_runs_created"),
        ({"job": SALES}, "ix_runs_job_created"),
        ({"status": "failed"}, "ix_runs_status_created"),
        ({"job": SALES, "status": "failed"}, "ix_runs_job_status_created"),
        ({"schedule": "hourly"}, "ix_runs_schedule_created"),
        ({"trigger": "user"}, "ix_runs_trigger_kind_created"),
        (
            {"trigger": "user", "since": T0, "until": T0 + timedelta(hours=1)},
            "ix_runs_trigger_kind_created",
        ),
        ({"since": T0, "until": T0 + timedelta(hours=1)}, "ix_runs_created"),
        ({"job": SALES, "since": T0}, "ix_runs_job_created"),
    ],
)
def test_list_runs_reads_an_index_in_order(mixed: Core, kwargs: dict, index: str) -> None:
    if mixed.read_engine.dialect.name != "sqlite":
        pytest.skip("query plans are checked on SQLite")
    with mixed.reading() as session, statements(mixed) as seen:
        first = queries.list_runs(session, RunFilter(**kwargs), limit=2)
        queries.list_runs(session, RunFilter(**kwargs), before=first.next_cursor, limit=2)
    with mixed.reading() as session:
        for statement, params in seen:
            plan = " | ".join(
                row[-1]
                for row in session.connection().exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {statement}", params
                )
            )
            assert f"USING INDEX {index}" in plan, plan
            # Only rows that tie on created_at are sorted, so LIMIT stops the index scan.
            assert "TEMP B-TREE FOR ORDER BY" not in plan, plan


def test_overview_reads_sql_when_redis_does_not_answer(mixed: Core) -> None:
    gone = f"redis://127.0.0.1:{free_port()}/0"
    dead = dataclasses.replace(mixed.settings, redis_url=gone, broker_url=gone)
    core = Core(dead)
    celery = create_celery(dead, core)
    try:
        data = queries.overview(core, celery, limit=2)
    finally:
        close_celery(celery)
    assert (data.due, data.queues, data.workers) == (None, None, None)
    assert [run.id for run in data.going] == ["r7", "r4"]
    assert [run.id for run in data.failures] == ["r8", "r3"]
