"""Admin pages: the runs list, one run's page, live progress and retry."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from batch import queries, retries, run_filters, runs
from batch.exceptions import (
    Conflict,
    InvalidFilter,
    InvalidParams,
    NotFound,
    ServiceUnavailable,
    UnknownJob,
    UserError,
)
from batch.jobs.views import view_or_inferred
from batch.models import (
    CANCELLED,
    FAILED,
    RUN_STATES,
    TRIGGER_KINDS,
    TRIGGER_PREFIXES,
    Run,
    trigger_kind,
)
from batch.queries import GOING_STATES
from batch.times import show_fire, show_utc
from batch.web import current_celery, current_core, params_form

blueprint = Blueprint("runs", __name__, url_prefix="/runs")

#: How a run page names a trigger kind, where its name is not the word itself.
TRIGGER_LABELS = {"api": "API token", "cli": "command line"}
RETRY_RE = re.compile(r" \(retry of (?P<run_id>[^()]+)\)$")
MAX_ID_LENGTH = 36


def error_page(error: UserError) -> tuple[str, int]:
    """A UserError as a page: 404 for NotFound, 409 for Conflict, else 400."""
    status = 404 if isinstance(error, NotFound) else 409 if isinstance(error, Conflict) else 400
    return render_template("runs/error.html", message=str(error), status=status), status


blueprint.register_error_handler(UserError, error_page)


def query_int(name: str, default: int) -> int:
    """The whole number in query argument ``name`` (``default`` if absent), else UserError."""
    raw = request.args.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"bad {name} {raw!r}: expected a whole number") from None


@blueprint.get("/")
def index() -> ResponseReturnValue:
    """Runs, newest first: searched by id prefix, filtered by job, schedule, status,
    trigger and date range (all kept in the URL), paged with an "older" cursor. Bad filters
    are shown at their fields, all at once (400), and nothing is searched."""
    core = current_core()
    limit = query_int("limit", queries.DEFAULT_PAGE)
    try:
        where = run_filters.parse_filter(request.args, core.jobs)
    except InvalidFilter as exc:
        empty = queries.RunPage(runs=[], next_cursor=None)
        return _runs_list(empty, typed_filters(run_filters.FILTER_ARGS), limit, exc.errors), 400
    before = request.args.get("before") or None
    cursor = queries.Cursor.parse(before) if before else None
    with core.reading() as session:
        page = queries.list_runs(session, where, before=cursor, limit=limit)
    return _runs_list(page, run_filters.filter_args(where), limit, {}, first_page=cursor is None)


def _runs_list(
    page: queries.RunPage,
    filters: dict[str, str],
    limit: int,
    errors: dict[str, str],
    *,
    first_page: bool = True,
) -> str:
    core = current_core()
    return render_template(
        "runs/index.html",
        page=page,
        filters=filters,
        errors=errors,
        limit_arg=limit if limit != queries.DEFAULT_PAGE else None,
        first_page=first_page,
        jobs=[j.name for j in core.jobs],
        states=RUN_STATES,
        trigger_kinds=TRIGGER_KINDS,
    )


def typed_filters(keys: tuple[str, ...]) -> dict[str, str]:
    """The filters as typed (bad ones too), to show them again in the form."""
    return {key: value for key in keys if (value := request.args.get(key, "").strip())}


@blueprint.route("/new", methods=["GET", "POST"])
def new() -> ResponseReturnValue:
    """Run a job now with params typed in a form built from its params schema (``?job=``
    picks the job); a valid form queues the run and shows its page."""
    core = current_core()
    jobs = {job.name: params_form.job_view(job) for job in core.jobs}
    if request.method == "GET":
        job = request.args.get("job") or next(iter(jobs), "")
        return _render_run_form(jobs, job, texts={}, errors={})
    job = request.form.get("job", "")
    texts = params_form.posted_params(request.form, job)
    try:
        given = params_form.given_params(job, texts)
        run_id = runs.submit_run(core, current_celery(), job, given, trigger=g.actor)
    except InvalidParams as exc:
        errors = params_form.field_errors(exc.body_errors())
        return _render_run_form(jobs, job, texts=texts, errors=errors), 400
    except ServiceUnavailable as exc:
        errors = {"form": f"Not queued: {exc}. The run is recorded as failed; try again."}
        return _render_run_form(jobs, job, texts=texts, errors=errors), 503
    flash(f"Run {run_id[:8]} of {job} queued.", "info")
    return redirect(url_for(".show", run_id=run_id))


def _render_run_form(
    jobs: dict[str, dict[str, Any]], job: str, *, texts: dict[str, str], errors: dict[str, str]
) -> str:
    if job not in jobs:
        raise UnknownJob(job)  # a 400 page naming it
    return render_template(
        "runs/new.html", jobs=jobs, job=job, fields=jobs[job]["fields"], texts=texts, errors=errors
    )


@blueprint.get("/progress.json")
def progress() -> Any:
    """Status and chunks done/total of the runs in ``?ids=a,b,c`` (for the page poller)."""
    ids = [part for part in request.args.get("ids", "").split(",") if part]
    if not all(queries.RUN_ID_TEXT.fullmatch(run_id) for run_id in ids):
        message = f"bad run id: at most {MAX_ID_LENGTH} printable ASCII characters"
        return jsonify(error=message), 400
    try:
        with current_core().reading() as session:
            found = queries.run_progress(session, set(ids))
    except UserError as exc:
        return jsonify(error=str(exc)), 400
    return jsonify(
        runs={
            run_id: {"status": p.status, "done": p.done, "total": p.total}
            for run_id, p in found.items()
        }
    )


@blueprint.get("/<run_id>")
def show(run_id: str) -> Any:
    """One run (by id or unique id prefix): params, trigger, chunks, result and error."""
    with current_core().reading() as session:
        detail = queries.run_detail(session, run_id)
    if detail.run.id != run_id:
        return redirect(url_for("runs.show", run_id=detail.run.id))
    return render_template(
        "runs/show.html",
        detail=detail,
        run=detail.run,
        trigger=describe_trigger(detail.run.trigger),
        can_retry=detail.run.status in (FAILED, CANCELLED),
        chunks_to_retry=_chunks_to_retry(detail),
        can_cancel=detail.run.status in GOING_STATES,
        history=detail.history,
        **_result_view(detail.run),
    )


def _result_view(run: Run) -> dict[str, Any]:
    """The run's result as its job's view reads it (none for a job no longer registered)."""
    if run.result is None or run.job not in current_core().jobs:
        return {"result_view": None, "result_rows": {}}
    view = view_or_inferred(current_core().jobs.get(run.job).result_view, [run.result])
    return {"result_view": view, "result_rows": view.rows_of(run.result)}


def _chunks_to_retry(detail: queries.RunDetail) -> list[int]:
    """The chunks "Retry failed chunks" would run again; none when it cannot."""
    run = detail.run
    states = [
        retries.ChunkState(chunk.index, chunk.status, chunk.spec is not None)
        for chunk in detail.chunks
    ]
    try:
        return retries.chunks_to_retry(run.id, run.status, run.chunk_count, states)
    except Conflict:
        return []


@blueprint.post("/<run_id>/cancel")
def cancel(run_id: str) -> Any:
    """Cancel a queued or running run; back to its page."""
    run = runs.cancel_run(current_core(), run_id, actor=g.actor)
    flash(f"Run {run.id[:8]} cancelled: chunks not started will not run.", "info")
    return redirect(url_for("runs.show", run_id=run.id))


@blueprint.post("/<run_id>/retry-chunks")
def retry_chunks(run_id: str) -> Any:
    """Run again, in this run, the chunks of a failed run that stored no partial; back to it."""
    indexes = retries.retry_failed_chunks(current_core(), current_celery(), run_id, actor=g.actor)
    shown = ", ".join(str(index) for index in indexes)
    flash(f"Chunk{'s' if len(indexes) > 1 else ''} {shown} running again.", "info")
    return redirect(url_for("runs.show", run_id=run_id))


@blueprint.post("/<run_id>/retry")
def retry(run_id: str) -> Any:
    """Submit a new run with the failed run's job and params; go to it."""
    new_id = retries.retry_run(current_core(), current_celery(), run_id, trigger=g.actor)
    flash(f"Retry of run {run_id} queued.", "info")
    return redirect(url_for("runs.show", run_id=new_id))


def describe_trigger(trigger: str) -> dict[str, str | None]:
    """Who or what started a run, from its trigger text: kind, name and retried run id."""
    match = RETRY_RE.search(trigger)
    retry_of = match["run_id"] if match else None
    base = trigger[: match.start()] if match else trigger
    kind = trigger_kind(base)
    name = base.removeprefix(TRIGGER_PREFIXES[kind]) if kind in TRIGGER_PREFIXES else base
    return {"kind": TRIGGER_LABELS.get(kind, kind), "name": name or None, "retry_of": retry_of}


@blueprint.app_template_filter("duration")
def format_duration(seconds: float | None) -> str:
    """Seconds as "850 ms", "12.3 s", "4 min 05 s" or "2 h 03 min"; "-" for None."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@blueprint.app_template_filter("when")
def format_when(value: datetime | None) -> str:
    """A moment in UTC, naming UTC (batch.times); "-" for None."""
    return show_utc(value)


@blueprint.app_template_filter("fire_time")
def format_fire_time(value: datetime, zone: str) -> str:
    """A schedule's fire time in its zone, with the weekday (batch.times)."""
    return show_fire(value, zone)


@blueprint.app_template_filter("pretty_json")
def pretty_json(value: Any) -> str:
    """Indented JSON for a <pre> block."""
    return json.dumps(value, indent=2, sort_keys=True)


@blueprint.app_template_filter("compact_json")
def compact_json(value: Any) -> str:
    """One-line JSON."""
    return json.dumps(value, sort_keys=True)


@blueprint.app_template_filter("cents")
def format_cents(cents: int | None) -> str:
    """Integer cents as "1,234.56"."""
    if cents is None:
        return "-"
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d}"
