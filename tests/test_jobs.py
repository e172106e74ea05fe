"""The shipped jobs end to end, their results compared with direct SQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery
from sqlalchemy import func, select, text

from batch import demo, runs
from batch.core import Core
from batch.exceptions import InvalidParams
from batch.models import Run, RunChunk
from tests.conftest import wait_for_run

END = datetime(2026, 11, 20, tzinfo=UTC)


def sales_by_sql(core: Core, since: datetime, until: datetime) -> dict:
    """The report computed independently: one GROUP BY over the whole window."""
    query = text(
        "SELECT region, COUNT(*), CAST(SUM(quantity) AS BIGINT),"
        " CAST(SUM(amount_cents) AS BIGINT),"
        " (2 * CAST(SUM(amount_cents) AS BIGINT) + COUNT(*)) / (2 * COUNT(*))"
        " FROM orders WHERE created_at >= :since AND created_at < :until"
        " GROUP BY region ORDER BY region"
    )
    naive = {"since": since.replace(tzinfo=None), "until": until.replace(tzinfo=None)}
    with core.engine.connect() as connection:
        rows = connection.execute(query, naive).all()
    regions = {
        region: {
            "orders": orders,
            "units": units,
            "revenue_cents": revenue,
            "avg_order_value_cents": average,
        }
        for region, orders, units, revenue, average in rows
    }
    return {"regions": regions, "orders": sum(r["orders"] for r in regions.values())}


def test_sales_summary_matches_sql(core: Core, celery_app: Celery, worker) -> None:
    demo.seed_orders(core.engine, 60_000, end=END)
    since, until = END - timedelta(days=20), END - timedelta(days=3, hours=5)
    run_id = runs.submit_run(
        core,
        celery_app,
        "reports.sales_summary",
        {"since": since.isoformat(), "until": until.isoformat()},
        trigger="test",
    )
    run = wait_for_run(core, run_id)
    assert run.status == "succeeded", run.error
    expected = sales_by_sql(core, since, until)
    assert expected["orders"] > 30_000  # the window really holds most of the data
    assert run.result == expected
    # 8 chunks wanted (2 processes x 4), fewer when chunks would hold < 5,000 ids.
    with core.engine.connect() as connection:
        first, last = connection.execute(
            text("SELECT MIN(id), MAX(id) FROM orders WHERE created_at >= :s AND created_at < :u"),
            {"s": since.replace(tzinfo=None), "u": until.replace(tzinfo=None)},
        ).one()
    assert run.chunk_count == min(8, (last - first + 1) // 5_000) > 1


def test_sales_summary_defaults_to_the_last_full_hour(core: Core, celery_app: Celery) -> None:
    job = core.jobs.get("reports.sales_summary")
    params = job.validate_params({}, now=datetime(2026, 11, 25, 10, 17, 3, tzinfo=UTC))
    assert (params.since, params.until) == (
        datetime(2026, 11, 25, 9, tzinfo=UTC),
        datetime(2026, 11, 25, 10, tzinfo=UTC),
    )


def test_sales_summary_over_an_empty_window(core: Core, celery_app: Celery, worker) -> None:
    run_id = runs.submit_run(
        core,
        celery_app,
        "reports.sales_summary",
        {"since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"},
        trigger="test",
    )
    run = wait_for_run(core, run_id)
    assert (run.status, run.chunk_count, run.result) == (
        "succeeded",
        0,
        {"regions": {}, "orders": 0},
    )


def add_finished_runs(core: Core, count: int, age: timedelta, status: str = "succeeded") -> None:
    created = datetime.now(UTC) - age
    with core.transaction() as session:
        for index in range(count):
            run_id = f"old-{age.days}-{status}-{index}"
            session.add(
                Run(
                    id=run_id, job="tests.sum_squares", params={}, status=status,
                    trigger="test", queue="default", created_at=created,
                )
            )  # fmt: skip
            session.add(RunChunk(run_id=run_id, chunk_index=0, status="succeeded", partial={}))


def test_purge_runs_deletes_old_finished_runs_with_their_chunks(
    core: Core, celery_app: Celery, worker
) -> None:
    add_finished_runs(core, 1_234, timedelta(days=40))
    add_finished_runs(core, 7, timedelta(days=40), status="running")
    add_finished_runs(core, 11, timedelta(days=5))
    run_id = runs.submit_run(
        core, celery_app, "cleanups.purge_runs", {"older_than_days": 30}, trigger="test"
    )
    run = wait_for_run(core, run_id)
    assert run.status == "succeeded", run.error
    assert run.result == {"deleted_runs": 1_234}
    assert run.chunk_count == 3  # 500 runs per batch
    with core.transaction() as session:
        left = session.scalar(select(func.count()).select_from(Run).where(Run.id.like("old-%")))
        orphans = session.scalar(
            select(func.count())
            .select_from(RunChunk)
            .where(RunChunk.run_id.like("old-40-succeeded-%"))
        )
    assert (left, orphans) == (7 + 11, 0)


def test_purge_rejects_an_age_below_one_day(core: Core) -> None:
    job = core.jobs.get("cleanups.purge_runs")
    with pytest.raises(InvalidParams) as raised:
        job.validate_params({"older_than_days": "0"}, now=datetime.now(UTC))
    assert list(raised.value.errors) == ["older_than_days"]


def test_purge_chunk_delivered_twice_at_once_deletes_and_counts_once(core: Core) -> None:
    add_finished_runs(core, 300, timedelta(days=40))
    with core.transaction() as session:
        session.add(
            Run(id="purge", job="cleanups.purge_runs", params={}, status="running",
                trigger="test", queue="cleanups", chunk_count=1)
        )  # fmt: skip
    cutoff = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    spec, params = {"cutoff": cutoff, "batch": 0}, {"older_than_days": 30}
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(
            pool.map(
                lambda _: runs.run_chunk(core, "purge", "cleanups.purge_runs", 0, spec, params),
                range(2),
            )
        )
    assert sorted(outcomes) == [False, True]
    with core.reading() as session:
        chunk = session.get(RunChunk, ("purge", 0))
        left = session.scalar(select(func.count()).select_from(Run).where(Run.id.like("old-%")))
    assert (chunk.partial, left) == ({"deleted_runs": 300}, 0)
    runs.finish_run(core, "purge")
    with core.reading() as session:
        assert session.get(Run, "purge").result == {"deleted_runs": 300}
