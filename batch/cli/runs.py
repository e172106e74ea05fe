"""``batch jobs``, ``batch run`` and ``batch runs``."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from datetime import datetime
from typing import Any

import click

from batch import queries, run_filters, runs
from batch.cli import Context, cli_actor, fail, pass_context
from batch.models import FINISHED_STATES, RUN_STATES, TRIGGER_KINDS
from batch.queries import RunItem
from batch.times import show_utc

POLL_SECONDS = 0.2
MAX_LISTED_RUNS = 10_000


@click.command("jobs")
@pass_context
def jobs_command(ctx: Context) -> None:
    """List registered jobs with their queue and params."""
    for job in ctx.core.jobs:
        properties = job.params_model.model_json_schema().get("properties", {})
        params = ", ".join(
            f"{name}={spec.get('default', '?')}" if "default" in spec else name
            for name, spec in properties.items()
        )
        click.echo(f"{job.name}  queue={job.queue}  params: {params or '-'}")
        if job.description:
            click.echo(f"    {job.description}")


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``key=value`` pairs into a dict; a pair without ``=`` is a user error."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"bad param {pair!r}: expected key=value")
        params[key] = value
    return params


@click.command("run")
@click.argument("job")
@click.option("-p", "--param", "pairs", multiple=True, help="A param as key=value (repeatable).")
@click.option("--wait", is_flag=True, help="Wait for the run, showing chunk progress.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@pass_context
def run_command(ctx: Context, job: str, pairs: tuple[str, ...], wait: bool, as_json: bool) -> None:
    """Queue a run of JOB and print its id (with --wait, its result)."""
    run_id = runs.submit_run(ctx.core, ctx.celery, job, parse_params(pairs), trigger="cli")
    if not wait:
        if as_json:
            click.echo(json.dumps(_outcome(run_id, "queued")))
        else:
            click.echo(run_id)
        return
    summary = wait_for_run(ctx, run_id)
    if as_json:
        click.echo(
            json.dumps(_outcome(run_id, summary["status"], summary["result"], summary["error"]))
        )
    else:
        click.echo(f"{run_id} {summary['status']}")
        click.echo(json.dumps(summary["result"] or summary["error"], indent=2))
    if summary["status"] != "succeeded":
        sys.exit(1)


def _outcome(
    run_id: str, status: str, result: dict[str, Any] | None = None, error: str | None = None
) -> dict[str, Any]:
    """What ``batch run --json`` prints: the same keys whether it waited or not."""
    return {"run_id": run_id, "status": status, "result": result, "error": error}


def wait_for_run(ctx: Context, run_id: str) -> dict[str, Any]:
    """Poll the run until it finishes, drawing chunks done/total on stderr."""
    shown = None
    while True:
        with ctx.core.reading() as session:
            summary = runs.run_summary(session, queries.find_run(session, run_id))
        progress = (summary["chunks_done"], summary["chunks_total"])
        if progress != shown and summary["chunks_total"]:
            _draw_progress(*progress)
            shown = progress
        if summary["status"] in FINISHED_STATES:
            if shown:
                click.echo("", err=True)
            return summary
        time.sleep(POLL_SECONDS)


def _draw_progress(done: int, total: int, width: int = 30) -> None:
    filled = width * done // total
    bar = "#" * filled + "-" * (width - filled)
    end = "" if sys.stderr.isatty() else "\n"
    click.echo(f"\r[{bar}] {done}/{total} chunks", err=True, nl=False)
    if end:
        click.echo("", err=True)


@click.group("runs")
def runs_group() -> None:
    """Inspect runs."""


@runs_group.command("list")
@click.option("--id", "id_prefix", help="Only runs whose id starts with this (4+ characters).")
@click.option("--job", help="Only runs of this job.")
@click.option("--schedule", help="Only runs of this schedule.")
@click.option("--status", help=f"Only runs in this state ({', '.join(RUN_STATES)}).")
@click.option("--trigger", help=f"Only runs started this way ({', '.join(TRIGGER_KINDS)}).")
@click.option("--since", help="Only runs created at or after this UTC date or time.")
@click.option(
    "--until", help="Only runs created before this UTC date or time (a date: to its end)."
)
# An int, not click.IntRange: a value out of range is a user error like any other (one
# line), not click's usage message.
@click.option(
    "--limit", default=20, show_default=True, type=int, help=f"At most {MAX_LISTED_RUNS}."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (the API's shape).")
@pass_context
def runs_list(ctx: Context, limit: int, as_json: bool, **filters: str | None) -> None:
    """The most recent runs, newest first, filtered as the admin's runs list.

    Example: batch runs list --schedule nightly-sales --status failed --since 2026-11-01
    """
    queries.check_limit(limit, MAX_LISTED_RUNS)
    args = {key: value for key, value in filters.items() if value is not None}
    args["q"] = args.pop("id_prefix", "")
    where = run_filters.parse_filter(args, ctx.core.jobs)
    found = _newest_runs(ctx, where, limit)
    if as_json:
        click.echo(json.dumps([item.as_json() for item in found], indent=2))
        return
    for item in found:
        duration = item.duration_seconds
        shown = f"{duration:.2f}s" if duration is not None and item.finished_at else "-"
        click.echo(
            f"{item.id}  {show_utc(item.created_at)}  {item.job:<24} "
            f"{item.status:<10} {shown:>9}  {item.trigger}"
        )


def _newest_runs(ctx: Context, where: run_filters.RunFilter, limit: int) -> list[RunItem]:
    """Up to ``limit`` runs ``where`` matches, newest first, read a bounded page at a time."""
    found: list[RunItem] = []
    cursor = None
    with ctx.core.reading() as session:
        while len(found) < limit:
            size = min(queries.MAX_PAGE, limit - len(found))
            page = queries.list_runs(session, where, before=cursor, limit=size)
            found += page.runs
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    return found


@runs_group.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run as one JSON object.")
@pass_context
def runs_show(ctx: Context, run_id: str, as_json: bool) -> None:
    """Status, progress, result and chunks of one run (a failed chunk's spec and traceback)."""
    with ctx.core.reading() as session:
        summary = runs.run_summary(session, queries.find_run(session, run_id))
    if as_json:
        click.echo(json.dumps(summary))
        return
    for key, value in summary.items():
        if key == "chunks":
            _echo_chunks(value)
            continue
        if key in ("params", "result"):
            value = json.dumps(value, indent=2) if value is not None else "-"
        click.echo(f"{key}: {value if value is not None else '-'}")


def _echo_chunks(chunks: list[dict[str, Any]]) -> None:
    """One line per chunk; under a failed one, its spec and its traceback."""
    click.echo("chunks:" if chunks else "chunks: -")
    for chunk in chunks:
        line = (
            f"  {chunk['index']:>3}  {chunk['status']:<9}  attempts {chunk['attempts']}"
            f"  {chunk['node'] or '-'}  {_chunk_duration(chunk)}"
        )
        click.echo(f"{line}  {chunk['error']}" if chunk["error"] else line)
        if chunk["spec"] is not None:
            click.echo(f"       spec: {json.dumps(chunk['spec'], sort_keys=True)}")
        if chunk["traceback"]:
            click.echo(textwrap.indent(chunk["traceback"].rstrip("\n"), "       "))


def _chunk_duration(chunk: dict[str, Any]) -> str:
    if not (chunk["started_at"] and chunk["finished_at"]):
        return "-"
    started, finished = (datetime.fromisoformat(chunk[k]) for k in ("started_at", "finished_at"))
    return f"{(finished - started).total_seconds():.2f}s"


@runs_group.command("cancel")
@click.argument("run_id")
@pass_context
def runs_cancel(ctx: Context, run_id: str) -> None:
    """Cancel a queued or running run: chunks not started yet will not run."""
    run = runs.cancel_run(ctx.core, run_id, actor=cli_actor())
    click.echo(f"cancelled {run.id}")


COMMANDS = [jobs_command, run_command, runs_group]
