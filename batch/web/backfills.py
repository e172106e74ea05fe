"""Admin pages: backfill a schedule (preview, start), follow and cancel its backfills.

Views stay thin: batch.backfills checks, plans, records and audits; this module reads the
form, calls it and shows its errors above the form.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from batch import backfills
from batch.catch_up import resume_and_catch_up
from batch.exceptions import Conflict, NotFound, UserError
from batch.schedules import get_schedule
from batch.web import current_celery, current_core

blueprint = Blueprint("backfills", __name__)

#: The form's fields, as the API's JSON names them.
FIELDS = ("from", "to", "only", "max_running")
#: Backfills a schedule's backfill page lists.
SHOWN_BACKFILLS = 20


@blueprint.route("/schedules/<name>/backfill", methods=["GET", "POST"])
def schedule_backfills(name: str) -> ResponseReturnValue:
    """The form (Preview shows what it would do, Start starts it) and the schedule's
    backfills with their progress."""
    form = {key: request.form.get(key, "") for key in FIELDS}
    if request.method == "GET":
        return _render(name, form)
    try:
        wanted = backfills.parse_request(name, form)
        if request.form.get("action") == "start":
            started = backfills.start_backfill(
                current_core(), current_celery(), wanted, actor=g.actor
            )
            flash(f"Backfill {started.id} started: {started.fires:,} fires.")
            return redirect(url_for(".schedule_backfills", name=name))
        plan = backfills.plan_backfill(current_core(), wanted)
    except NotFound:
        abort(404)
    except UserError as exc:
        return _render(name, form, error=str(exc)), 409 if isinstance(exc, Conflict) else 400
    return _render(name, form, plan=plan)


@blueprint.post("/schedules/<name>/resume")
def resume(name: str) -> ResponseReturnValue:
    """Enable a disabled schedule and backfill the fires it missed meanwhile."""
    try:
        backfill = resume_and_catch_up(current_core(), current_celery(), name, actor=g.actor)
    except NotFound:
        abort(404)
    except Conflict as exc:
        flash(str(exc))
        return redirect(url_for("schedules.detail", name=name))
    if backfill is None:
        flash(f"Schedule {name} enabled: it missed no fire.")
        return redirect(url_for("schedules.detail", name=name))
    flash(f"Schedule {name} enabled; backfill {backfill.id} runs what it missed meanwhile.")
    return redirect(url_for(".schedule_backfills", name=name))


@blueprint.post("/backfills/<int:backfill_id>/cancel")
def cancel(backfill_id: int) -> ResponseReturnValue:
    """Stop a backfill making runs; back to its schedule's backfill page."""
    try:
        backfill = backfills.get_backfill(current_core(), backfill_id)
        backfills.cancel_backfill(current_core(), backfill_id, actor=g.actor)
    except NotFound:
        abort(404)
    except Conflict as exc:
        flash(str(exc))
    else:
        flash(f"Backfill {backfill_id} cancelled: the runs it made go on.")
    return redirect(url_for(".schedule_backfills", name=backfill.schedule_name))


def _render(
    name: str,
    form: dict[str, str],
    *,
    plan: backfills.Plan | None = None,
    error: str | None = None,
) -> str:
    with current_core().reading() as session:
        try:
            get_schedule(session, name)
        except NotFound:
            abort(404)
        rows = backfills.newest_backfills(session, schedule=name, limit=SHOWN_BACKFILLS)
        shown: list[dict[str, Any]] = [backfills.progress_of(session, row) for row in rows]
    return render_template(
        "backfills/schedule.html",
        name=name,
        form=form,
        only_choices=backfills.ONLY_CHOICES,
        default_max_running=backfills.DEFAULT_MAX_RUNNING,
        max_running_limit=backfills.MAX_RUNNING_LIMIT,
        plan=plan,
        error=error,
        backfills=shown,
    )
