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
from tests.web.conftest import field_errors

END = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
SVG_RE = re.compile(r"<svg .*?</svg>", re.S)
SERIES_RE = re.compile(r'<g class="series" data-series="([^"]+)">')


def cell(page: str, run_id: str, region: str, field: str) -> str:
    """The text of one region's cell in a run's row of the results table."""
    row = re.search(rf'<tr data-run-id="{run_id}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {run_id}"
    found = re.search(
        rf'data-row="{re.escape(region)}" data-field="{field}">([^<]*)<', row.group(1)
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
            assert cell(page, run_id, region, "revenue_cents") == format_cents(
                stats["revenue_cents"]
            )
        regions_of_run = run.result["regions"].values()
        total = sum(stats["revenue_cents"] for stats in regions_of_run)
        assert cell(page, run_id, "total", "revenue_cents") == format_cents(total)
    # Newest first in the table.
    assert page.index(f'<tr data-run-id="{run_ids[1]}">') < page.index(
        f'<tr data-run-id="{run_ids[0]}">'
    )
    assert "2026-01-31 00:00 – 2026-02-15 00:00" in page

    svgs = SVG_RE.findall(page)
    assert len(svgs) == 2  # orders and revenue, the view's headline measures
    for svg in svgs:
        assert SERIES_RE.findall(svg) == regions
        assert svg.count("<circle") == len(regions) * len(run_ids)
    assert "<title>Orders per region</title>" in svgs[0]
    assert "<title>Revenue per region (currency units)</title>" in svgs[1]
    north = stored[run_ids[1]].result["regions"]["north"]
    assert f"north, 2026-02-15 00:00: {north['orders']:,}</title>" in svgs[0]
    assert f"north, 2026-02-15 00:00: {north['revenue_cents'] / 100:,.10g}</title>" in svgs[1]
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere

    # The run page shows the same numbers as a table.
    run_page = client.get(f"/runs/{run_ids[0]}").get_data(as_text=True)
    first_north = stored[run_ids[0]].result["regions"]["north"]
    assert re.search(
        rf'<tr data-row="north">.*?data-field="orders">{first_north["orders"]:,}<.*?'
        rf'data-field="revenue_cents">{format_cents(first_north["revenue_cents"])}<.*?'
        rf'data-field="units">{first_north["units"]:,}<.*?'
        rf'data-field="avg_order_value_cents">{format_cents(first_north["avg_order_value_cents"])}<',
        run_page,
        re.S,
    )

    index = client.get("/results/").get_data(as_text=True)
    latest = stored[run_ids[1]].result
    total_orders = sum(stats["orders"] for stats in latest["regions"].values())
    total_revenue = sum(stats["revenue_cents"] for stats in latest["regions"].values())
    assert f'<tr data-job="{SALES}">' in index
    assert f"{total_orders:,} orders, {format_cents(total_revenue)} revenue in 5 regions" in index
    assert f'href="/runs/{run_ids[1]}"' in index


def test_a_job_without_a_view_shows_the_numbers_of_its_results(
    client: FlaskClient, core: Core
) -> None:
    add_run(core, "s0", job=SUMS, minute=0, result={"sum": 14, "note": "x"})
    add_run(core, "s1", job=SUMS, minute=1, result={"sum": 30, "note": "y"})
    add_run(core, "s2", job=SUMS, minute=2, status="failed", result=None)
    page = client.get(f"/results/{SUMS}").get_data(as_text=True)
    assert re.findall(r'<tr data-run-id="([^"]+)">', page) == ["s1", "s0"]
    assert cell(page, "s1", "", "sum") == "30" and cell(page, "s0", "", "sum") == "14"
    (svg,) = SVG_RE.findall(page)
    assert SERIES_RE.findall(svg) == ["sum"]
    assert "sum, 2026-03-01 12:01: 30</title>" in svg
    limited = client.get(f"/results/{SUMS}?limit=1").get_data(as_text=True)
    assert re.findall(r'<tr data-run-id="([^"]+)">', limited) == ["s1"]

    index = client.get("/results/").get_data(as_text=True)
    assert "sum 30" in index
    assert re.search(r'data-job="cleanups.purge_runs">.*?no succeeded run yet', index, re.S)
    run_page = client.get("/runs/s1").get_data(as_text=True)
    assert re.search(r'<tr data-row="">\s*<td class="num" data-field="sum">30</td>', run_page)


def test_results_filter_by_schedule_and_date_range(client: FlaskClient, core: Core) -> None:
    for minute in range(6):
        schedule = "hourly" if minute % 2 else None
        trigger = f"schedule:{schedule}" if schedule else "cli"
        result = {"sum": minute}
        add_run(core, f"s{minute}", job=SUMS, minute=minute, result=result, trigger=trigger,
                schedule_name=schedule)  # fmt: skip

    def shown(query: str) -> list[str]:
        response = client.get(f"/results/{SUMS}{query}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return re.findall(r'<tr data-run-id="([^"]+)">', response.get_data(as_text=True))

    assert shown("?schedule=hourly") == ["s5", "s3", "s1"]
    assert shown("?since=2026-03-01T12:02&until=2026-03-01T12:05") == ["s4", "s3", "s2"]
    assert shown("?schedule=hourly&until=2026-03-01T12:03") == ["s1"]
    assert shown("?schedule=daily") == []
    page = client.get(f"/results/{SUMS}?schedule=hourly&limit=2").get_data(as_text=True)
    assert 'name="schedule" value="hourly"' in page
    assert f"/results/{SUMS}?limit=24&amp;schedule=hourly" in page
    bad = client.get(f"/results/{SUMS}?since=soon&schedule=a%20b")
    assert bad.status_code == 400
    assert field_errors(bad.get_data(as_text=True)) == {
        "schedule": "bad schedule 'a b': not a schedule name",
        "since": "bad since 'soon': expected a date (2026-12-01) or a date and time"
        " (2026-12-01T06:00)",
    }
    assert "<svg" not in bad.get_data(as_text=True)


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


def test_x_labels_never_overlap_and_stay_inside_the_chart() -> None:
    labels = [f"2026-11-{day:02d} 01:06" for day in range(1, 13)]
    svg = charts.line_chart(labels, {"n": list(range(12))}, title="t")
    shown = re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="(\w+)" fill="#5d6678">'
                       r"(2026-[^<]+)</text>", svg)  # fmt: skip
    xs = [float(x) for x, _, _ in shown]
    # 16 characters of 6.5 px and a 12 px gap: 4 fit in the 480 px plot, every third shown.
    assert [label for _, _, label in shown] == labels[::3]
    assert all(b - a >= 16 * 6.5 + 12 for a, b in zip(xs, xs[1:], strict=False))
    assert shown[0][1] == "start"


def test_results_chart_follows_the_windows_not_the_creation_order(
    client: FlaskClient, core: Core
) -> None:
    # A run made last for the earliest window is drawn first.
    for run_id, minute, day in (("late", 3, 1), ("d2", 1, 2), ("d3", 2, 3)):
        window = {"since": f"2026-03-{day:02d}T00:00:00Z", "until": f"2026-03-{day:02d}T01:00:00Z"}
        add_run(core, run_id, job=SALES, minute=minute, params=window,
                result={"regions": {"north": {"orders": day, "units": 1, "revenue_cents": 1,
                                              "avg_order_value_cents": 1}}})  # fmt: skip
    page = client.get(f"/results/{SALES}").get_data(as_text=True)
    chart = page[page.index("<svg") : page.index("</svg>")]
    drawn = re.findall(r"<title>north, (2026-03-0\d) 00:00: (\d+)</title>", chart)
    assert drawn == [("2026-03-01", "1"), ("2026-03-02", "2"), ("2026-03-03", "3")]


@pytest.mark.parametrize(
    ("top", "ticks"),
    [(0, [0, 1]), (7, [0, 2, 4, 6, 8]), (100, [0, 25, 50, 75, 100]), (1234, [0, 500, 1000, 1500])],
)
def test_nice_ticks(top: float, ticks: list[float]) -> None:
    assert charts.nice_ticks(top) == ticks


def test_compact_numbers() -> None:
    values = [0, 12, 1234, 2_500_000, 3e9]
    assert [charts.compact_number(v) for v in values] == ["0", "12", "1.23k", "2.5M", "3G"]
