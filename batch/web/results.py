"""Admin pages: each job's aggregates over its newest runs, as tables and charts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, render_template
from markupsafe import Markup

from batch import queries
from batch.exceptions import NotFound, UserError
from batch.web import charts, current_core
from batch.web.runs import error_page, format_cents, query_int

blueprint = Blueprint("results", __name__, url_prefix="/results")
blueprint.register_error_handler(UserError, error_page)

SALES_SUMMARY = "reports.sales_summary"
DEFAULT_RUNS = 12
MAX_RUNS = 100


@blueprint.get("/")
def index() -> str:
    """Every registered job with its latest result."""
    core = current_core()
    jobs = list(core.jobs)
    with core.reading() as session:
        latest = queries.latest_results(session, [job.name for job in jobs])
    return render_template("results/index.html", jobs=jobs, latest=latest)


@blueprint.get("/<job>")
def show(job: str) -> str:
    """The newest succeeded runs of ``job``: a table of their results and a chart."""
    core = current_core()
    if job not in core.jobs:
        raise NotFound(f"unknown job {job!r}")
    limit = queries.check_limit(query_int("limit", DEFAULT_RUNS), MAX_RUNS)
    with core.reading() as session:
        items = queries.job_results(session, job, limit)
    if job == SALES_SUMMARY:
        sales = sales_view(items)
        return render_template(
            "results/sales_summary.html", job=core.jobs.get(job), sales=sales, limit=limit
        )
    return render_template(
        "results/generic.html",
        job=core.jobs.get(job),
        items=items,
        chart=numbers_chart(items),
        limit=limit,
    )


def _param_time(item: queries.ResultItem, name: str) -> datetime | None:
    value = (item.params or {}).get(name)
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def run_label(item: queries.ResultItem) -> str:
    """The x label of a run: the start of its window if it has one, else its creation."""
    return (_param_time(item, "since") or item.created_at).strftime("%m-%d %H:%M")


def window_label(item: queries.ResultItem) -> str:
    """A run's ``[since, until)`` window as "2026-01-02 10:00 - 11:00" ("-" without one)."""
    since, until = _param_time(item, "since"), _param_time(item, "until")
    if since is None or until is None:
        return "-"
    end = "%H:%M" if until.date() == since.date() else "%Y-%m-%d %H:%M"
    return f"{since:%Y-%m-%d %H:%M} – {until.strftime(end)}"


@dataclass(frozen=True, kw_only=True)
class SalesRow:
    """One run in the sales table: (region, orders, revenue) cells, formatted, and totals."""

    run_id: str
    window: str
    cells: list[tuple[str, str, str]]
    total_orders: str
    total_revenue: str


@dataclass(frozen=True, kw_only=True)
class SalesView:
    """The sales summary runs pivoted per region, newest first, with two charts."""

    regions: list[str]
    rows: list[SalesRow]
    revenue_chart: Markup | None
    orders_chart: Markup | None


def _regions(item: queries.ResultItem) -> dict[str, Any]:
    regions = (item.result or {}).get("regions")
    return regions if isinstance(regions, dict) else {}


def _sales_row(item: queries.ResultItem, regions: list[str]) -> SalesRow:
    # A region absent from a run's result had no orders in that window.
    stats = [_regions(item).get(region) or {} for region in regions]
    orders = [s.get("orders", 0) for s in stats]
    revenue = [s.get("revenue_cents", 0) for s in stats]
    return SalesRow(
        run_id=item.id,
        window=window_label(item),
        cells=[
            (region, f"{o:,}", format_cents(r))
            for region, o, r in zip(regions, orders, revenue, strict=True)
        ],
        total_orders=f"{sum(orders):,}",
        total_revenue=format_cents(sum(revenue)),
    )


def sales_view(items: list[queries.ResultItem]) -> SalesView:
    """Tables and charts of orders and revenue per region per run."""
    regions = sorted({region for item in items for region in _regions(item)})
    rows = [_sales_row(item, regions) for item in items]
    if not items:
        return SalesView(regions=regions, rows=rows, revenue_chart=None, orders_chart=None)
    oldest_first = list(reversed(items))
    labels = [run_label(item) for item in oldest_first]
    revenue: dict[str, list[float | None]] = {}
    orders: dict[str, list[float | None]] = {}
    for region in regions:
        stats = [_regions(item).get(region) or {} for item in oldest_first]
        revenue[region] = [s.get("revenue_cents", 0) / 100 for s in stats]
        orders[region] = [s.get("orders", 0) for s in stats]
    return SalesView(
        regions=regions,
        rows=rows,
        revenue_chart=charts.line_chart(labels, revenue, title="Revenue per region"),
        orders_chart=charts.line_chart(labels, orders, title="Orders per region"),
    )


def numbers_chart(items: list[queries.ResultItem]) -> Markup | None:
    """A chart of the top-level numbers of the results over runs, if they have any."""
    oldest_first = list(reversed(items))
    fields = sorted(
        {
            key
            for item in oldest_first
            for key, value in (item.result or {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
    )
    if not fields:
        return None
    series: dict[str, list[float | None]] = {
        key: [_number((item.result or {}).get(key)) for item in oldest_first] for key in fields
    }
    labels = [run_label(item) for item in oldest_first]
    return charts.line_chart(labels, series, title="Result values per run")


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None
