"""Admin pages: schedules (list, details with the audit log, create, edit, enable, disable,
delete, run now) and the fire-time preview the form asks for as the user types.

Views stay thin: batch.schedules validates, stores, audits and writes through to RedBeat,
batch.runs queues runs and batch.cron says when a schedule fires. This module only reads
the form, calls them and shows their errors at the fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import cache, lru_cache
from typing import Any, Literal, NamedTuple
from zoneinfo import available_timezones

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from sqlalchemy import Row
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from batch import alert_delivery, alerts, queries, runs, schedule_lists, schedules
from batch.cron import FireTimes, make_schedule
from batch.db import utcnow
from batch.entries import last_fire_times
from batch.exceptions import (
    Conflict,
    InvalidFilter,
    InvalidParams,
    InvalidSchedule,
    NotFound,
    UnknownJob,
    UserError,
)
from batch.models import AuditEntry, Schedule
from batch.run_filters import RunFilter
from batch.storable import text_problem
from batch.times import show_fire, show_utc
from batch.web import charts, current_celery, current_core, params_form
from batch.web.runs import error_page, query_int, typed_filters

blueprint = Blueprint("schedules", __name__, url_prefix="/schedules")

PREVIEW_COUNT = 5
#: Runs shown (and charted) on a schedule's page; the runs list has the rest.
HISTORY_RUNS = 20
#: The newest alerts a schedule's page shows.
SHOWN_ALERTS = 20
HISTORY_CHART_WIDTH, HISTORY_CHART_HEIGHT = 560, 200
#: Fields of the form with an input of their own; errors for other keys go above the form.
FORM_FIELDS = ("name", *(f for f in schedules.SPEC_FIELDS if f != "params"))
TEXT_FIELDS = tuple(f for f in FORM_FIELDS if f not in ("enabled",))
Mode = Literal["create", "update"]
#: Schedules per page of the list, and the last page a query may ask for.
PAGE_SIZE = 50
MAX_PAGE = 100_000
#: The list's query arguments: name search, job, queue, enabled.
FILTER_ARGS = ("q", "job", "queue", "enabled")
ENABLED_ARGS = {"": None, "yes": True, "no": False}


# --- The list, the details and the preview ---------------------------------------------------


@blueprint.get("/")
def index() -> ResponseReturnValue:
    """Schedules by name, a page at a time: searched by name, filtered by job, queue and
    state. Next fire and last run are computed for the rows of the page only.
    """
    core = current_core()
    try:
        page = query_int("page", 1)
        if not 1 <= page <= MAX_PAGE:
            raise UserError(f"bad page {page}: expected 1 to {MAX_PAGE}")
    except UserError as exc:
        return error_page(exc)
    try:
        where = list_filter(request.args)
    except InvalidFilter as exc:
        return _schedule_list([], 0, page, typed_filters(FILTER_ARGS), exc.errors), 400
    with core.reading() as session:
        rows, total = schedule_lists.list_schedules(
            session, core.jobs, where, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
    last_fires = last_fire_times(current_celery(), [row.name for row in rows if row.enabled])
    items = [ScheduleSummary.of(row, _last_run(row), last_fires.get(row.name)) for row in rows]
    return _schedule_list(items, total, page, _filter_args(where), {})


def _schedule_list(
    items: list[ScheduleSummary],
    total: int,
    page: int,
    filters: dict[str, str],
    errors: dict[str, str],
) -> str:
    core = current_core()
    return render_template(
        "schedules/index.html",
        items=items,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        filters=filters,
        errors=errors,
        jobs=[job.name for job in core.jobs],
        queues=core.settings.queues,
    )


@blueprint.post("/")
def bulk() -> ResponseReturnValue:
    """Enable or disable the schedules ticked on the list; back to the same list."""
    action, names = request.form.get("action"), request.form.getlist("names")
    if action not in ("enable", "disable"):
        return error_page(UserError("bad action: expected enable or disable"))
    if names:
        try:
            done = schedules.set_enabled_many(
                current_core(), current_celery(), names, action == "enable", actor=g.actor
            )
        except NotFound as exc:
            return error_page(exc)
        flash(f"{len(done.changed)} of {len(names)} selected schedule(s) {action}d.")
    else:
        flash("No schedule selected.")
    return _back_to_list()


def _back_to_list() -> ResponseReturnValue:
    """Back to the list page the form was on: its filters and page are in the form."""
    back = {key: request.form[key] for key in (*FILTER_ARGS, "page") if request.form.get(key)}
    return redirect(url_for(".index", **back))


def list_filter(args: MultiDict[str, str]) -> schedule_lists.ScheduleFilter:
    """The list's filters from the query string (``q``, ``job``, ``queue``, ``enabled``),
    for the admin's list and the API's; InvalidFilter names every value no schedule has."""
    search, job, queue = (args.get(key, "").strip() or None for key in ("q", "job", "queue"))
    state = args.get("enabled", "")
    errors: dict[str, str] = {}
    if search is not None and (problem := text_problem(search)):
        errors["q"] = f"bad search: {problem}"
    if job is not None and job not in current_core().jobs:
        errors["job"] = f"unknown job {job!r}"
    if queue is not None and queue not in current_core().settings.queues:
        errors["queue"] = f"unknown queue {queue!r}"
    if state not in ENABLED_ARGS:
        errors["enabled"] = f"bad enabled {state!r}: expected yes or no"
    if errors:
        raise InvalidFilter(errors)
    return schedule_lists.ScheduleFilter(search, job, queue, ENABLED_ARGS[state])


def _filter_args(where: schedule_lists.ScheduleFilter) -> dict[str, str]:
    """The query arguments that give ``where`` back (for links and the bulk form)."""
    state = {True: "yes", False: "no", None: None}[where.enabled]
    values = {"q": where.search, "job": where.job, "queue": where.queue, "enabled": state}
    return {key: value for key, value in values.items() if value}


@blueprint.get("/<name>")
def detail(name: str) -> str:
    """One schedule: its settings, next fire times, last run and audit log."""
    return _render_detail(name)


@blueprint.get("/preview")
def preview() -> ResponseReturnValue:
    """The next five fire times of a cron line or interval, as ISO strings in its zone."""
    args = request.args
    try:
        timing = make_schedule(
            cron=args.get("cron", "").strip() or None,
            timezone=args.get("timezone", "").strip() or "UTC",
            interval_seconds=_whole_number(args.get("interval_seconds", "")),
        )
    except InvalidSchedule as exc:
        return jsonify(errors=exc.errors), 400
    zone = _zone(timing)
    times = timing.upcoming(PREVIEW_COUNT, utcnow())
    return jsonify(
        times=[moment.astimezone(zone).isoformat() for moment in times],
        shown=[show_fire(moment, zone) for moment in times],
    )


# --- Create and edit ---------------------------------------------------------------------------


@blueprint.route("/new", methods=["GET", "POST"])
def new() -> ResponseReturnValue:
    """The form for a new schedule (``?job=`` picks the job shown first)."""
    if request.method == "POST":
        return _submit(ScheduleForm.from_request(request.form, name=None), mode="create")
    return _render_form(ScheduleForm.blank(request.args.get("job")), mode="create")


@blueprint.route("/<name>/edit", methods=["GET", "POST"])
def edit(name: str) -> ResponseReturnValue:
    """The form for an existing schedule (its name cannot change)."""
    if request.method == "POST":
        return _submit(ScheduleForm.from_request(request.form, name=name), mode="update")
    with current_core().reading() as session:
        row = _get_or_404(session, name)
    return _render_form(ScheduleForm.from_row(row), mode="update")


def _submit(form: ScheduleForm, *, mode: Mode) -> ResponseReturnValue:
    if form.params_job != form.job:
        # The job changed without JavaScript: show its params fields before saving.
        form.notice = f"Params fields for {form.job} are shown below: check them and save."
        form.params_job = form.job
        return _render_form(form, mode=mode)
    try:
        spec = schedules.validate_schedule(current_core(), form.data())
        row = schedules.save_schedule(
            current_core(), current_celery(), spec, actor=g.actor, mode=mode
        )
    except InvalidSchedule as exc:
        form.errors = params_form.field_errors(exc.errors)
        return _render_form(form, mode=mode), 400
    except Conflict as exc:
        form.errors = {"name": str(exc)}
        return _render_form(form, mode=mode), 409
    except NotFound:
        abort(404)
    flash(f"Schedule {row.name} {'created' if mode == 'create' else 'saved'}.")
    return redirect(url_for(".detail", name=row.name))


# --- Enable, disable, delete, run now ----------------------------------------------------------


@blueprint.post("/<name>/enable")
def enable(name: str) -> ResponseReturnValue:
    """Turn a schedule on: it gets its RedBeat entry back."""
    return _set_enabled(name, True)


@blueprint.post("/<name>/disable")
def disable(name: str) -> ResponseReturnValue:
    """Turn a schedule off: its RedBeat entry is removed."""
    return _set_enabled(name, False)


def _set_enabled(name: str, enabled: bool) -> ResponseReturnValue:
    try:
        schedules.set_enabled(current_core(), current_celery(), name, enabled, actor=g.actor)
    except NotFound:
        abort(404)
    flash(f"Schedule {name} {'enabled' if enabled else 'disabled'}.")
    if request.form.get("back") == "index":
        return _back_to_list()
    return redirect(url_for(".detail", name=name))


@blueprint.post("/<name>/delete")
def delete(name: str) -> ResponseReturnValue:
    """Delete a schedule from SQL and RedBeat (the audit log keeps its history)."""
    try:
        schedules.remove_schedule(current_core(), current_celery(), name, actor=g.actor)
    except NotFound:
        abort(404)
    flash(f"Schedule {name} deleted.")
    return redirect(url_for(".index"))


@blueprint.post("/<name>/run")
def run_now(name: str) -> ResponseReturnValue:
    """Queue a run of the schedule's job with its params now; shows the run."""
    with current_core().reading() as session:
        row = _get_or_404(session, name)
    trigger = f"{g.actor} via schedule {name}"
    try:
        run_id = runs.submit_run(
            current_core(), current_celery(), row.job, row.params, trigger=trigger, schedule=row
        )
    except (UnknownJob, InvalidParams) as exc:
        return _render_detail(name, error=f"Not run: {exc}"), 400
    return redirect(url_for("runs.show", run_id=run_id))


# --- Pages -------------------------------------------------------------------------------------


def _render_detail(name: str, *, error: str | None = None) -> str:
    with current_core().reading() as session:
        row = _get_or_404(session, name)
        history = queries.list_runs(session, RunFilter(schedule=name), limit=HISTORY_RUNS).runs
        trail = schedules.audit_trail(session, name)
        raised = alerts.schedule_alerts(session, name, SHOWN_ALERTS)
        deliveries = alert_delivery.delivery_states(session, [alert.id for alert in raised])
    last = LastRun(history[0].id, history[0].status, history[0].created_at) if history else None
    last_fire = last_fire_times(current_celery(), [name]).get(name) if row.enabled else None
    timing = _timing(row.cron, row.timezone, row.interval_seconds)
    upcoming: list[str] = []
    if row.enabled and isinstance(timing, FireTimes):
        moments = timing.upcoming(PREVIEW_COUNT, last_fire or utcnow())
        upcoming = [show_fire(moment, _zone(timing)) for moment in moments]
    return render_template(
        "schedules/detail.html",
        item=ScheduleSummary.of(row, last, last_fire),
        schedule=schedules.schedule_as_dict(row),
        upcoming=upcoming,
        history=history,
        history_chart=_durations_chart(history),
        audit=[_audit_view(entry) for entry in trail],
        alerts=raised,
        deliveries=deliveries,
        paused_reason=row.paused_reason,
        error=error,
    )


def _durations_chart(history: list[queries.RunItem]) -> Markup | None:
    """How long each of the schedule's recent runs took, oldest first; None before any ran."""
    durations = [run.duration_seconds if run.finished_at else None for run in reversed(history)]
    if all(duration is None for duration in durations):
        return None
    labels = [show_utc(run.created_at) for run in reversed(history)]
    return charts.line_chart(
        labels,
        {"duration (s)": durations},
        title=f"Duration of the last {len(history)} runs",
        width=HISTORY_CHART_WIDTH,
        height=HISTORY_CHART_HEIGHT,
    )


def _render_form(form: ScheduleForm, *, mode: Mode) -> str:
    jobs = {job.name: params_form.job_view(job) for job in current_core().jobs}
    return render_template(
        "schedules/form.html",
        form=form,
        mode=mode,
        jobs=jobs,
        fields=jobs[form.job]["fields"] if form.job in jobs else [],
        queues=_queue_choices(form.values.get("queue", "")),
        timezones=_timezones(),
        other_errors={k: v for k, v in form.errors.items() if not _shown_at_field(k, form, jobs)},
    )


def _queue_choices(chosen: str) -> tuple[str, ...]:
    # A stored queue that has left BATCH_QUEUES stays selected, so that saving names it in a
    # field error instead of silently dropping the schedule's queue.
    configured = current_core().settings.queues
    return configured if not chosen or chosen in configured else (*configured, chosen)


@cache
def _timezones() -> list[str]:
    return sorted(available_timezones())


def _shown_at_field(key: str, form: ScheduleForm, jobs: dict[str, dict[str, Any]]) -> bool:
    fields = jobs.get(form.job, {}).get("fields", [])
    return key in FORM_FIELDS or key == "params" or key in {f"params.{f['name']}" for f in fields}


def _get_or_404(session: Session, name: str) -> Schedule:
    try:
        return schedules.get_schedule(session, name)
    except NotFound:
        abort(404)


class LastRun(NamedTuple):
    """A schedule's newest run, as its list row and page show it."""

    id: str
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ScheduleSummary:
    """What the list and the details show about one schedule (an object, not a dict: a
    template reads its fields without a failed attribute lookup first)."""

    name: str
    job: str
    enabled: bool
    #: The timing in words, or why it is invalid.
    words: str
    next_fire: str | None
    last_run: LastRun | None
    last_run_at: str | None
    description: str | None
    source: str | None

    @classmethod
    def of(cls, row: Any, last: LastRun | None, last_fire: datetime | None) -> ScheduleSummary:
        """The summary of ``row`` (a schedule, or a row of its LIST_COLUMNS), given its
        newest run and its last fire time."""
        timing = _timing(row.cron, row.timezone, row.interval_seconds)
        next_fire = None
        if row.enabled and isinstance(timing, FireTimes):
            next_fire = show_fire(timing.next_after(last_fire or utcnow()), _zone(timing))
        return cls(
            name=row.name,
            job=row.job,
            enabled=row.enabled,
            words=timing.describe() if isinstance(timing, FireTimes) else timing,
            next_fire=next_fire,
            last_run=last,
            last_run_at=show_utc(last.created_at) if last else None,
            description=row.description,
            source=row.source,
        )


def _last_run(row: Row[Any]) -> LastRun | None:
    """The newest run of a row of ``schedule_lists.list_schedules``."""
    if row.last_run_id is None:
        return None
    return LastRun(row.last_run_id, row.last_run_status, row.last_run_at)


@lru_cache(maxsize=4096)
def _timing(cron: str | None, timezone: str, interval_seconds: int | None) -> FireTimes | str:
    """A row's schedule, or why it cannot be built (a row stored before a rule changed); the
    same for every row with the same timing, so built once."""
    try:
        return make_schedule(cron=cron, timezone=timezone, interval_seconds=interval_seconds)
    except InvalidSchedule as exc:
        return f"invalid: {'; '.join(exc.errors.values())}"


def _zone(timing: FireTimes) -> tzinfo:
    # Intervals have no zone of their own: their times are shown in UTC.
    return getattr(timing, "zone", UTC)


def _audit_view(entry: AuditEntry) -> dict[str, Any]:
    """Who, when, what: the fields that changed with their values before and after."""
    before, after = entry.before or {}, entry.after or {}
    changes = [
        (name, _show_value(before.get(name)), _show_value(after.get(name)))
        for name in schedules.AUDITED_FIELDS
        if before.get(name) != after.get(name)
        and not (_blank(before.get(name)) and _blank(after.get(name)))
    ]
    return {
        "at": show_utc(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "changes": changes,
    }


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == {}


def _show_value(value: Any) -> str:
    if value is None:
        return "—"
    return json.dumps(value) if isinstance(value, dict | list | bool) else str(value)


# --- The form ----------------------------------------------------------------------------------


@dataclass
class ScheduleForm:
    """What the schedule form shows and sends back: raw text, kept as typed."""

    values: dict[str, str]
    enabled: bool
    params: dict[str, str]
    #: The job the params fields were drawn for (differs from ``job`` after a no-JS switch).
    params_job: str
    errors: dict[str, str] = field(default_factory=dict)
    notice: str = ""

    @property
    def job(self) -> str:
        return self.values["job"]

    @classmethod
    def blank(cls, job: str | None) -> ScheduleForm:
        """An empty form; ``job`` (if registered) else the first job is selected."""
        names = [registered.name for registered in current_core().jobs]
        chosen = job if job in names else (names[0] if names else "")
        values = dict.fromkeys(TEXT_FIELDS, "") | {
            "job": chosen,
            "timezone": "UTC",
            "alert_after_failures": "1",
            "catch_up": "latest",
            "catch_up_window_seconds": "86400",
            "catch_up_max": "10",
        }
        return cls(values=values | {"overlap": "allow"}, enabled=True, params={}, params_job=chosen)

    @classmethod
    def from_row(cls, row: Schedule) -> ScheduleForm:
        """The form filled in with a stored schedule."""
        data = schedules.schedule_as_dict(row)
        values = {name: "" if data[name] is None else str(data[name]) for name in TEXT_FIELDS}
        params = {key: params_form.param_text(value) for key, value in data["params"].items()}
        return cls(values=values, enabled=row.enabled, params=params, params_job=row.job)

    @classmethod
    def from_request(cls, form: MultiDict[str, str], *, name: str | None) -> ScheduleForm:
        """The form as posted; ``name`` comes from the URL when editing."""
        values = {key: form.get(key, "") for key in TEXT_FIELDS}
        if name is not None:
            values["name"] = name
        params_job = form.get("params_job", values["job"])
        params = params_form.posted_params(form, params_job)
        return cls(values=values, enabled="enabled" in form, params=params, params_job=params_job)

    def data(self) -> dict[str, Any]:
        """The schedule for ``validate_schedule``: blanks mean "not given"."""
        values = {key: value.strip() for key, value in self.values.items()}
        return {
            "name": values["name"],
            "job": values["job"],
            "params": params_form.given_params(self.job, self.params),
            "cron": values["cron"] or None,
            "timezone": values["timezone"] or "UTC",
            "interval_seconds": values["interval_seconds"] or None,
            "enabled": self.enabled,
            "overlap": values["overlap"],
            "queue": values["queue"] or None,
            "priority": values["priority"] or None,
            "deadline_seconds": values["deadline_seconds"] or None,
            "must_start_within_seconds": values["must_start_within_seconds"] or None,
            "must_succeed_within_seconds": values["must_succeed_within_seconds"] or None,
            "alert_after_failures": values["alert_after_failures"] or 1,
            "pause_after_failures": values["pause_after_failures"] or None,
            "catch_up": values["catch_up"] or "latest",
            "catch_up_window_seconds": values["catch_up_window_seconds"] or 86400,
            "catch_up_max": values["catch_up_max"] or 10,
            "description": self.values["description"],
        }


def _whole_number(raw: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidSchedule({"interval_seconds": "must be a whole number of seconds"}) from None
