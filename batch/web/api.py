"""The JSON API (bearer-token authenticated): jobs, runs and schedules.

Views stay thin: batch.runs and batch.schedules validate, store and audit; this module only
reads the JSON body, calls them and turns their errors into JSON 4xx responses.
"""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from batch import backfills, queries, run_filters, runs, schedule_lists, schedules
from batch.exceptions import (
    Conflict,
    InvalidParams,
    InvalidSchedule,
    NotFound,
    ServiceUnavailable,
    UnknownJob,
    UserError,
)
from batch.models import Schedule
from batch.web import current_celery, current_core, load_json
from batch.web.runs import query_int
from batch.web.schedules import FILTER_ARGS, list_filter

blueprint = Blueprint("api", __name__, url_prefix="/api")

#: Names one bulk enable or disable takes (the body stays well under its 1 MiB limit).
MAX_BULK_NAMES = 10_000
#: Schedules per page of ``GET /api/schedules`` unless ``limit`` says, and the most it may say.
SCHEDULES_PAGE, MAX_SCHEDULES_PAGE = 100, 1000

STATUS_OF_ERROR: tuple[tuple[type[UserError], int], ...] = (
    (UnknownJob, 404),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidParams, 400),
    (InvalidSchedule, 400),
)


class BadBody(UserError):
    """The request body is not the JSON the endpoint expects."""


@blueprint.get("/jobs")
def list_jobs() -> Response:
    """Every registered job: name, description, queue and params JSON schema."""
    return jsonify(jobs=[job.describe() for job in current_core().jobs])


@blueprint.post("/jobs/<job>/runs")
def submit_run(job: str) -> tuple[Response, int, dict[str, str]]:
    """Queue a run of ``job``; 202 with the run id and where to poll it."""
    body = _json_body(allowed={"params"}, required=False)
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise BadBody("params must be a JSON object")
    run_id = runs.submit_run(current_core(), current_celery(), job, params, trigger=g.actor)
    url = url_for("api.get_run", run_id=run_id)
    return jsonify(run_id=run_id, status="queued", url=url), 202, {"Location": url}


@blueprint.get("/runs")
def list_runs() -> Response:
    """A page of runs, newest first, filtered as the admin's runs list; ``next`` pages on
    (keyset: rows created before the page's last, never skipped or repeated by new runs)."""
    core = current_core()
    where = run_filters.parse_filter(request.args, core.jobs)
    limit = queries.check_limit(query_int("limit", queries.DEFAULT_PAGE))
    before = request.args.get("before") or None
    cursor = queries.Cursor.parse(before) if before else None
    with core.reading() as session:
        page = queries.list_runs(session, where, before=cursor, limit=limit)
    following = None
    if page.next_cursor is not None:
        kept = run_filters.filter_args(where)
        if limit != queries.DEFAULT_PAGE:
            kept["limit"] = str(limit)
        following = url_for(".list_runs", **kept, before=str(page.next_cursor))
    return jsonify(runs=[item.as_json() for item in page.runs], next=following)


@blueprint.get("/runs/<run_id>")
def get_run(run_id: str) -> Response:
    """Status, chunk progress, result and error of one run."""
    with current_core().reading() as session:
        return jsonify(runs.run_summary(session, queries.find_run(session, run_id)))


@blueprint.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str) -> Response:
    """Cancel a queued or running run; the run as it is now (409 when it already ended)."""
    run = runs.cancel_run(current_core(), run_id, actor=g.actor)
    with current_core().reading() as session:
        return jsonify(runs.run_summary(session, queries.find_run(session, run.id)))


@blueprint.get("/schedules")
def list_schedules() -> Response:
    """A page of schedules by name, filtered as the admin's list; ``next`` pages on."""
    core = current_core()
    where = list_filter(request.args)
    limit = query_int("limit", SCHEDULES_PAGE)
    if not 1 <= limit <= MAX_SCHEDULES_PAGE:
        raise UserError(f"bad limit {limit}: expected 1 to {MAX_SCHEDULES_PAGE}")
    after = request.args.get("after") or None
    if after is not None and not schedules.NAME_RE.fullmatch(after):
        raise UserError(f"bad after {after!r}: expected a schedule name")
    with core.reading() as session:
        rows, total = schedule_lists.find_schedules(
            session, core.jobs, where, limit=limit + 1, after=after
        )
    page = rows[:limit]
    following = None
    if len(rows) > limit:
        kept = {key: request.args[key] for key in (*FILTER_ARGS, "limit") if request.args.get(key)}
        following = url_for(".list_schedules", **kept, after=page[-1].name)
    return jsonify(
        schedules=[schedules.schedule_as_dict(row) for row in page], total=total, next=following
    )


@blueprint.get("/schedules/<name>")
def get_schedule(name: str) -> Response:
    """One schedule."""
    with current_core().reading() as session:
        return jsonify(schedules.schedule_as_dict(schedules.get_schedule(session, name)))


@blueprint.post("/schedules")
def create_schedule() -> tuple[Response, int, dict[str, str]]:
    """Create a schedule; 201, or 409 when the name is taken."""
    row = _save(_json_body(), mode="create")
    url = url_for("api.get_schedule", name=row.name)
    return jsonify(schedules.schedule_as_dict(row)), 201, {"Location": url}


@blueprint.put("/schedules/<name>")
def replace_schedule(name: str) -> Response:
    """Replace a schedule (fields left out take their defaults); renaming is refused."""
    body = _json_body()
    if body.setdefault("name", name) != name:
        raise InvalidSchedule({"name": f"must be {name!r} (the name in the URL) or left out"})
    return jsonify(schedules.schedule_as_dict(_save(body, mode="update")))


@blueprint.post("/schedules/enable")
def enable_schedules() -> Response:
    """Enable the schedules in ``{"names": [...]}`` in one transaction."""
    return _set_enabled(True)


@blueprint.post("/schedules/disable")
def disable_schedules() -> Response:
    """Disable the schedules in ``{"names": [...]}`` in one transaction."""
    return _set_enabled(False)


def _set_enabled(enabled: bool) -> Response:
    names = _json_body(allowed={"names"}).get("names")
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(name, str) for name in names)
        or len(names) > MAX_BULK_NAMES
    ):
        raise BadBody(f"names must be a list of 1 to {MAX_BULK_NAMES} schedule names")
    done = schedules.set_enabled_many(
        current_core(), current_celery(), names, enabled, actor=g.actor
    )
    return jsonify(
        schedules=[schedules.schedule_as_dict(row) for row in done.rows], changed=done.changed
    )


@blueprint.delete("/schedules/<name>")
def delete_schedule(name: str) -> tuple[str, int]:
    """Delete a schedule from SQL and RedBeat; 204."""
    schedules.remove_schedule(current_core(), current_celery(), name, actor=g.actor)
    return "", 204


@blueprint.post("/schedules/<name>/backfill")
def backfill_schedule(name: str) -> tuple[Response, int, dict[str, str]]:
    """Backfill a schedule's past fires (batch/backfills.py): 202 with its progress and where
    to poll it; with ``"dry_run": true``, 200 with what it would do (nothing is written)."""
    body = _json_body(allowed={"from", "to", "only", "max_running", "dry_run"})
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadBody("dry_run must be true or false")
    request_ = backfills.parse_request(name, body)
    if dry_run:
        plan = backfills.plan_backfill(current_core(), request_)
        return jsonify(backfills.plan_as_dict(plan)), 200, {}
    backfill = backfills.start_backfill(current_core(), current_celery(), request_, actor=g.actor)
    url = url_for("api.get_backfill", backfill_id=backfill.id)
    return jsonify(backfills.progress(current_core(), backfill.id)), 202, {"Location": url}


@blueprint.get("/backfills/<int:backfill_id>")
def get_backfill(backfill_id: int) -> Response:
    """A backfill: its range, state and its runs by status."""
    return jsonify(backfills.progress(current_core(), backfill_id))


@blueprint.post("/backfills/<int:backfill_id>/cancel")
def cancel_backfill(backfill_id: int) -> Response:
    """Stop a backfill making runs (those made go on); 409 once it ended."""
    backfills.cancel_backfill(current_core(), backfill_id, actor=g.actor)
    return jsonify(backfills.progress(current_core(), backfill_id))


def _save(body: dict[str, Any], *, mode: Literal["create", "update"]) -> Schedule:
    spec = schedules.validate_schedule(current_core(), body)
    return schedules.save_schedule(current_core(), current_celery(), spec, actor=g.actor, mode=mode)


def _json_body(*, allowed: set[str] | None = None, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object (whatever the Content-Type), else BadBody."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        if required:
            raise BadBody("the request body must be a JSON object")
        return {}
    try:
        body = load_json(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and load_json's limits
        raise BadBody(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadBody("the request body must be a JSON object")
    unknown = sorted(body.keys() - allowed) if allowed is not None else []
    if unknown:
        raise BadBody(f"unknown field(s) in the request body: {', '.join(unknown)}")
    return body


def _error(status: int, message: str, errors: dict[str, str] | None = None) -> Response:
    payload: dict[str, Any] = {"error": message}
    if errors is not None:
        payload["errors"] = errors
    response = jsonify(payload)
    response.status_code = status
    return response


@blueprint.errorhandler(UserError)
def _user_error(exc: UserError) -> Response:
    # The one place where core errors become status codes.
    status = next((code for kind, code in STATUS_OF_ERROR if isinstance(exc, kind)), 400)
    errors = getattr(exc, "errors", None)
    if isinstance(exc, InvalidParams):
        # Keys are paths in the request body, as for schedules: "params.n".
        errors = exc.body_errors()
    return _error(status, str(exc), errors)


@blueprint.errorhandler(ServiceUnavailable)
def _service_unavailable(exc: ServiceUnavailable) -> Response:
    response = _error(503, str(exc))
    response.headers["Retry-After"] = "5"
    return response


@blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    # Also reached for an unhandled exception (as a 500), after Flask has logged it.
    response = _error(exc.code or 500, exc.description or exc.name)
    for header, value in exc.get_headers():
        if header.lower() != "content-type":
            response.headers[header] = value  # e.g. Allow on a 405
    return response


@blueprint.before_app_request
def _routing_error() -> Response | None:
    """Answer an unknown /api/ path (404) or method (405) in JSON.

    A routing error happens before the request belongs to a blueprint, so the blueprint's
    error handlers never see it; this app-wide hook acts on /api/ paths only. create_app
    registers auth.authenticate first, so a request without a token still gets its 401.
    """
    exc = request.routing_exception
    if exc is None or isinstance(exc, RequestRedirect) or not request.path.startswith("/api/"):
        return None
    return _http_error(exc)
