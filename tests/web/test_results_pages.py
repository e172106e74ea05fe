"""The results pages and the SVG charts they draw."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from flask.testing import FlaskClient

from batch import runs
from batch.core import Core
from batch.demo import seed_orders
from batch.web import charts
from batch.web.runs import format_cents
from tests.conftest import wait_for_run
from tests.test_queries import SALES, SUMS, add_run

END = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
SVG_RE = re.compile(r"<svg .*?</svg>", re.S)
SERIES_RE = re.compile(r'<g class="series" data-series="([^"]+)">')


def cell(page: str, run_id: str, region: str, field: str) -> str:
    """The text of one region's cell in a run's row of the sales table."""
    row = re.search(rf'<tr data-run-id="{run_id}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {run_id}"
    found = re.search(
        rf'data-region="{re.escape(region)}" data-field="{field}">([^<]*)<', row.group(1)
    )
    assert found, f"no {field} cell for {region}"
    return found.group(1)


def test_sales_summary_results_match_the_stored_result(
    client: FlaskClient, core: Core, celery_app: Celery, worker: Path
) -> None:
    seed_orders(core.engine, 3000, end=END)
    windows = [
        (END - timedelta(days=30), END - timedelta(days=15)),
        (END - timedelta(days=15), END),
    ]
    run_ids = []
    for since, until in windows:
        params = {"since": since.isoformat(), "until": until.isoformat()}
        run_ids.append(runs.submit_run(core, celery_app, SALES, params, trigger="test"))
    stored = {run_id: wait_for_run(core, run_id) for run_id in run_ids}
    assert {run.status for run in stored.values()} == {"succeeded"}

    response = client.get(f"/results/{SALES}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    regions = sorted(stored[run_ids[0]].result["regions"])
    assert regions == ["central", "east", "north", "south", "west"]
    for run_id, run in stored.items():
        for region, stats in run.result["regions"].items():
            assert cell(page, run_id, region, "orders") == f"{stats['orders']:,}"
            assert cell(page, run_id, region, "revenue") == format_cents(stats["revenue_cents"])
    # Newest first in the table.
    assert page.index(f'<tr data-run-id="{run_ids[1]}">') < page.index(
        f'<tr data-run-id="{run_ids[0]}">'
    )
    assert "2026-01-31 00:00 – 2026-02-15 00:00" in page

    svgs = SVG_RE.findall(page)
    assert len(svgs) == 2  # revenue and orders
    for svg in svgs:
        assert SERIES_RE.findall(svg) == regions
        assert svg.count("<circle") == len(regions) * len(run_ids)
    assert "<title>Revenue per region</title>" in svgs[0]
    north = stored[run_ids[1]].result["regions"]["north"]
    assert f"north, 02-15 00:00: {north['orders']:,}</title>" in svgs[1]
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere

    # The run page shows the same numbers as a table.
    run_page = client.get(f"/runs/{run_ids[0]}").get_data(as_text=True)
    first_north = stored[run_ids[0]].result["regions"]["north"]
    assert re.search(
        rf'<tr data-region="north">.*?data-field="orders">{first_north["orders"]:,}<.*?'
        rf'data-field="revenue">{format_cents(first_north["revenue_cents"])}<',
        run_page,
        re.S,
    )

    index = client.get("/results/").get_data(as_text=True)
    latest = stored[run_ids[1]].result
    total_orders = sum(stats["orders"] for stats in latest["regions"].values())
    assert f'<tr data-job="{SALES}">' in index and f"{total_orders:,} orders" in index
    assert f'href="/runs/{run_ids[1]}"' in index


def test_other_jobs_show_their_result_json_and_numbers(client: FlaskClient, core: Core) -> None:
    add_run(core, "s0", job=SUMS, minute=0, result={"sum": 14})
    add_run(core, "s1", job=SUMS, minute=1, result={"sum": 30})
    add_run(core, "s2", job=SUMS, minute=2, status="failed", result=None)
    page = client.get(f"/results/{SUMS}").get_data(as_text=True)
    assert re.findall(r'<tr data-run-id="([^"]+)">', page) == ["s1", "s0"]
    assert "&#34;sum&#34;: 30" in page and "&#34;sum&#34;: 14" in page
    (svg,) = SVG_RE.findall(page)
    assert SERIES_RE.findall(svg) == ["sum"]
    limited = client.get(f"/results/{SUMS}?limit=1").get_data(as_text=True)
    assert re.findall(r'<tr data-run-id="([^"]+)">', limited) == ["s1"]

    index = client.get("/results/").get_data(as_text=True)
    assert "{&#34;sum&#34;: 30}" in index
    assert re.search(r'data-job="cleanups.purge_runs">.*?no succeeded run yet', index, re.S)


def test_results_page_without_runs(client: FlaskClient, core: Core) -> None:
    page = client.get(f"/results/{SALES}").get_data(as_text=True)
    assert "No succeeded run yet." in page and "<svg" not in page


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/results/no.such.job", 404, "unknown job &#39;no.such.job&#39;"),
        (f"/results/{SALES}?limit=0", 400, "bad limit 0"),
        (f"/results/{SALES}?limit=101", 400, "bad limit 101"),
        (f"/results/{SALES}?limit=x", 400, "bad limit &#39;x&#39;"),
    ],
)
def test_bad_results_requests(client: FlaskClient, path: str, status: int, message: str) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert message in response.get_data(as_text=True)


def test_chart_escapes_labels_and_breaks_lines_at_gaps() -> None:
    svg = charts.line_chart(
        ["a<b", "c", "d"],
        {'<script>"x"': [1, None, 3], "y": [0, 2, 4]},
        title="T & <U>",
    )
    assert "<script>" not in svg
    assert 'data-series="&lt;script&gt;&quot;x&quot;"' in svg
    assert "<title>T &amp; &lt;U&gt;</title>" in svg and "a&lt;b" in svg
    first, second = svg.split('<g class="series"')[1:]
    assert first.count("<polyline") == 2 and first.count("<circle") == 2  # the gap splits it
    assert second.count("<polyline") == 1 and second.count("<circle") == 3
    with pytest.raises(ValueError, match="has 1 values for 3 labels"):
        charts.line_chart(["a", "b", "c"], {"z": [1]}, title="t")


@pytest.mark.parametrize(
    ("top", "ticks"),
    [(0, [0, 1]), (7, [0, 2, 4, 6, 8]), (100, [0, 25, 50, 75, 100]), (1234, [0, 500, 1000, 1500])],
)
def test_nice_ticks(top: float, ticks: list[float]) -> None:
    assert charts.nice_ticks(top) == ticks


def test_compact_numbers() -> None:
    values = [0, 12, 1234, 2_500_000, 3e9]
    assert [charts.compact_number(v) for v in values] == ["0", "12", "1.23k", "2.5M", "3G"]
