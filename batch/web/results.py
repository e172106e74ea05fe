"""Admin pages: each job's results over its newest runs, as a table and charts drawn from the
job's ``result_view`` (batch.jobs.views), filtered by schedule and date range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from batch import queries, run_filters
from batch.exceptions import InvalidFilter, NotFound, UserError
from batch.jobs import Job
from batch.jobs.views import Measure, ResultView, view_or_inferred
from batch.web import charts, current_core
from batch.web.runs import error_page, format_cents, format_duration, query_int, typed_filters

blueprint = Blueprint("results", __name__, url_prefix="/results")
blueprint.register_error_handler(UserError, error_page)

DEFAULT_RUNS = 12
MAX_RUNS = 100
#: The query arguments of a results page's filter (the runs list's, for one job).
FILTER_ARGS = ("schedule", "since", "until")


@blueprint.get("/")
def index() -> str:
    """Every registered job with its latest result, summed up by its view."""
    core = current_core()
    jobs = list(core.jobs)
    with core.reading() as session:
        latest = queries.latest_results(session, [job.name for job in jobs])
    summaries = {
        job.name: summary(view_of(job, [item]), item.result)
        for job in jobs
        if (item := latest[job.name]) is not None
    }
    return render_template("results/index.html", jobs=jobs, latest=latest, summaries=summaries)


@blueprint.get("/<job>")
def show(job: str) -> ResponseReturnValue:
    """The newest succeeded runs of ``job``: a table of their results and a chart per
    headline measure, of one schedule or a date range if asked."""
    core = current_core()
    if job not in core.jobs:
        raise NotFound(f"unknown job {job!r}")
    limit = queries.check_limit(query_int("limit", DEFAULT_RUNS), MAX_RUNS)
    args = {key: request.args.get(key, "") for key in FILTER_ARGS} | {"job": job}
    errors: dict[str, str] = {}
    items: list[queries.ResultItem] = []
    try:
        where = run_filters.parse_filter(args, core.jobs)
    except InvalidFilter as exc:
        errors, filters = exc.errors, typed_filters(FILTER_ARGS)
    else:
        with core.reading() as session:
            items = queries.job_results(session, where, limit)
        filters = run_filters.filter_args(where)
        filters.pop("job")
    job_obj = core.jobs.get(job)
    view = view_of(job_obj, items)
    page = render_template(
        "results/show.html",
        job=job_obj,
        view=view,
        table=runs_table(view, items),
        charts=measure_charts(view, items),
        items=items,
        limit=limit,
        filters=filters,
        errors=errors,
    )
    return page, 400 if errors else 200


def view_of(job: Job, items: list[queries.ResultItem]) -> ResultView:
    """The job's declared view, else the numbers at the top of these results."""
    return view_or_inferred(job.result_view, (item.result for item in items))


# --- Values ---------------------------------------------------------------------------------


@blueprint.app_template_filter("measure")
def format_measure(value: float | None, unit: str) -> str:
    """A measure's value as its unit reads: "1,234", "1,234.56" (cents), "4.2 s"; "-" None."""
    if value is None:
        return "-"
    if unit == "cents":
        return format_cents(round(value))
    if unit == "seconds":
        return format_duration(value)
    if unit == "count" or isinstance(value, int):
        return f"{round(value):,}"
    return f"{value:,.6g}"


def chart_value(value: float | None, unit: str) -> float | None:
    """A value as a chart plots it: cents in currency units."""
    if value is None:
        return None
    return value / 100 if unit == "cents" else value


def _param_time(item: queries.ResultItem, name: str) -> datetime | None:
    value = (item.params or {}).get(name)
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def run_moment(item: queries.ResultItem) -> datetime:
    """Where a run stands on a chart's time axis: the start of its window if it has one
    (``since``), else its creation, in UTC."""
    return _param_time(item, "since") or item.created_at


def run_label(item: queries.ResultItem) -> str:
    """A run on a chart's x axis, with its full date (``run_moment``)."""
    return run_moment(item).strftime("%Y-%m-%d %H:%M")


def window_label(item: queries.ResultItem) -> str:
    """A run's ``[since, until)`` window as "2026-01-02 10:00 – 11:00 UTC" ("-" without one)."""
    since, until = _param_time(item, "since"), _param_time(item, "until")
    if since is None or until is None:
        return "-"
    end = "%H:%M" if until.date() == since.date() else "%Y-%m-%d %H:%M"
    return f"{since:%Y-%m-%d %H:%M} – {until.strftime(end)} UTC"


# --- Tables and charts -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunRow:
    """One run in the results table: its cells (row name, measure, text) and totals."""

    run_id: str
    window: str
    finished_at: datetime | None
    cells: list[tuple[str, Measure, str]]
    totals: list[tuple[Measure, str]]


@dataclass(frozen=True, kw_only=True)
class RunsTable:
    """The results of many runs: a column group per row of the view, newest run first."""

    row_names: list[str]
    measures: tuple[Measure, ...]
    totalled: tuple[Measure, ...]
    runs: list[RunRow]


def runs_table(view: ResultView, items: list[queries.ResultItem]) -> RunsTable:
    """The headline measures of each run, per row of the view, with totals over the rows."""
    measures = view.headlines
    totalled = tuple(m for m in measures if m.total) if view.rows is not None else ()
    per_run = [view.rows_of(item.result) for item in items]
    names = sorted({name for rows in per_run for name in rows})
    runs = []
    for item, rows in zip(items, per_run, strict=True):
        sums = view.totals(rows)
        runs.append(
            RunRow(
                run_id=item.id,
                window=window_label(item),
                finished_at=item.finished_at,
                cells=[
                    (name, m, format_measure(rows.get(name, {}).get(m.key), m.unit))
                    for name in names
                    for m in measures
                ],
                totals=[(m, format_measure(sums[m.key], m.unit)) for m in totalled],
            )
        )
    return RunsTable(row_names=names, measures=measures, totalled=totalled, runs=runs)


def measure_charts(view: ResultView, items: list[queries.ResultItem]) -> list[Markup]:
    """A line chart per headline measure over the runs in time order (of their windows, so
    that a run made later for an earlier window takes its place): a line per row."""
    oldest_first = sorted(items, key=run_moment)
    per_run = [view.rows_of(item.result) for item in oldest_first]
    names = sorted({name for rows in per_run for name in rows})
    labels = [run_label(item) for item in oldest_first]
    drawn = []
    for measure in view.headlines:
        series = {
            name or measure.label: [
                chart_value(rows.get(name, {}).get(measure.key), measure.unit) for rows in per_run
            ]
            for name in names
        }
        if not any(value is not None for values in series.values() for value in values):
            continue
        per = f" per {view.row_label.lower()}" if view.rows is not None else ""
        unit = " (currency units)" if measure.unit == "cents" else ""
        drawn.append(charts.line_chart(labels, series, title=f"{measure.label}{per}{unit}"))
    return drawn


def summary(view: ResultView, result: Any) -> str | None:
    """One line for the results index: the totals of the headline measures; None when the
    view finds nothing to show (the index shows the JSON then)."""
    rows = view.rows_of(result)
    if not rows or not view.headlines:
        return None
    if view.rows is None:
        values = rows[""]
        parts = [f"{m.label} {format_measure(values[m.key], m.unit)}" for m in view.headlines]
        return ", ".join(parts)
    sums = view.totals(rows)
    parts = [
        f"{format_measure(sums[m.key], m.unit)} {m.label.lower()}"
        for m in view.headlines
        if m.total
    ]
    return f"{', '.join(parts)} in {len(rows)} {view.row_label.lower()}s"
