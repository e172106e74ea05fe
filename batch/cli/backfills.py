"""``batch schedules backfill`` and ``batch backfills list|show|cancel``."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import click

from batch import backfills
from batch.backfills import Plan, Request
from batch.cli import Context, cli_actor, pass_context
from batch.cli.schedules import schedules_group
from batch.run_filters import parse_moment
from batch.times import show_utc

POLL_SECONDS = 1.0
MOMENT_HELP = "a date (2025-01-01, its first moment) or an ISO time, UTC unless it names a zone"


def _moment(name: str) -> Any:
    def convert(_ctx: click.Context, _param: click.Parameter, text: str) -> datetime | None:
        return parse_moment(name, text, end_of_day=False)

    return convert


@schedules_group.command("backfill")
@click.argument("name")
@click.option("--from", "since", required=True, callback=_moment("from"), help=MOMENT_HELP)
@click.option("--to", "until", required=True, callback=_moment("to"), help=MOMENT_HELP)
@click.option(
    "--only",
    type=click.Choice(backfills.ONLY_CHOICES),
    default=backfills.MISSING,
    show_default=True,
    help="missing: fires with no run (or a skipped or cancelled one); failed: fires whose"
    " run failed; all: every fire not running now.",
)
@click.option(
    "--max-running",
    type=click.IntRange(1, backfills.MAX_RUNNING_LIMIT),
    default=backfills.DEFAULT_MAX_RUNNING,
    show_default=True,
    help="The most of its runs queued or running at once.",
)
@click.option("--dry-run", is_flag=True, help="Show what it would do; write nothing.")
@click.option("--wait", is_flag=True, help="Wait until it is done, showing its progress.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@pass_context
def schedules_backfill(
    ctx: Context,
    name: str,
    since: datetime,
    until: datetime,
    only: str,
    max_running: int,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Run schedule NAME for its past fires from --from (included) to --to (excluded).

    Each fire gets one run with the params its fire would have had (a sales summary fired at
    10:00 sums 09:00-10:00). A fire that has its run is left alone (see --only): running the
    same backfill twice makes nothing new. Runs are made a few at a time (--max-running) by
    the worker nodes, after the scheduler's live fires. Exits 1 if --wait saw a run fail.
    """
    request = Request(name, since, until, only=only, max_running=max_running)
    if dry_run:
        plan = backfills.plan_backfill(ctx.core, request)
        if as_json:
            click.echo(json.dumps(backfills.plan_as_dict(plan)))
        else:
            _echo_plan(plan)
        return
    backfill = backfills.start_backfill(ctx.core, ctx.celery, request, actor=cli_actor())
    if not wait:
        if as_json:
            click.echo(json.dumps(backfills.progress(ctx.core, backfill.id)))
        else:
            click.echo(
                f"backfill {backfill.id} of {name} started: {backfill.fires:,} fires,"
                f" at most {max_running} runs at once"
            )
            click.echo(f"follow it with: batch backfills show {backfill.id}")
        return
    _wait(ctx, backfill.id, as_json)


def _echo_plan(plan: Plan) -> None:
    request = plan.request
    click.echo(
        f"{request.schedule}: {plan.fires:,} fires from {show_utc(request.since)}"
        f" to {show_utc(request.until)} (--only {request.only})"
    )
    click.echo(
        f"would run {plan.runs:,}: {plan.new:,} new, {plan.again:,} again;"
        f" {plan.left:,} left as they are"
    )
    for fire in plan.listed:
        params = json.dumps(fire.params, sort_keys=True)
        again = f" (replaces run {fire.replaces})" if fire.replaces else ""
        click.echo(f"  {show_utc(fire.fire)}  {fire.action:<5}  {params}{again}")
    if plan.runs > len(plan.listed):
        click.echo(f"  ... and {plan.runs - len(plan.listed):,} more")


def _wait(ctx: Context, backfill_id: int, as_json: bool) -> None:
    shown = ""
    while True:
        state = backfills.progress(ctx.core, backfill_id)
        line = _progress_line(state)
        if line != shown:
            click.echo(line, err=True)
            shown = line
        if state["state"] != backfills.GOING:
            break
        time.sleep(POLL_SECONDS)
    if as_json:
        click.echo(json.dumps(state))
    if state["runs"].get("failed"):
        sys.exit(1)


def _progress_line(state: dict[str, Any]) -> str:
    counts = ", ".join(f"{count:,} {status}" for status, count in sorted(state["runs"].items()))
    return (
        f"backfill {state['id']} {state['state']}: {state['fires_done']:,}/{state['fires']:,}"
        f" fires looked at; runs: {counts or 'none yet'}"
    )


@click.group("backfills")
def backfills_group() -> None:
    """Follow and cancel backfills (start one with `batch schedules backfill`)."""


@backfills_group.command("list")
@click.option("--schedule", help="Only this schedule's backfills.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@pass_context
def backfills_list(ctx: Context, schedule: str | None, limit: int) -> None:
    """The newest backfills, one line each."""
    with ctx.core.reading() as session:
        rows = backfills.newest_backfills(session, schedule=schedule, limit=limit)
        lines = [_progress_line(backfills.progress_of(session, row)) for row in rows]
    for row, line in zip(rows, lines, strict=True):
        click.echo(f"{row.schedule_name:<28} {line}")
    if not rows:
        click.echo("no backfill")


@backfills_group.command("show")
@click.argument("backfill_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def backfills_show(ctx: Context, backfill_id: int, as_json: bool) -> None:
    """A backfill's range, state and its runs by status."""
    state = backfills.progress(ctx.core, backfill_id)
    if as_json:
        click.echo(json.dumps(state))
        return
    for key, value in state.items():
        if key == "runs":
            value = ", ".join(f"{n:,} {status}" for status, n in sorted(value.items())) or "-"
        click.echo(f"{key}: {value if value is not None else '-'}")


@backfills_group.command("cancel")
@click.argument("backfill_id", type=int)
@pass_context
def backfills_cancel(ctx: Context, backfill_id: int) -> None:
    """Stop a backfill making runs; the runs it made go on (cancel them with `batch runs
    cancel`)."""
    backfills.cancel_backfill(ctx.core, backfill_id, actor=cli_actor())
    click.echo(f"cancelled backfill {backfill_id}")


COMMANDS = [backfills_group]
