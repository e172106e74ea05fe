"""``batch schedules list|import|diff|enable|disable|remove``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from batch import schedule_lists, schedules
from batch.catch_up import resume_and_catch_up
from batch.cli import Context, cli_actor, fail, pass_context

DEFAULT_SCHEDULES_DIR = Path("schedules")
#: ``batch schedules diff`` exits with this when the files and SQL differ (as diff(1) does).
DRIFT_EXIT = 1


@click.group("schedules")
def schedules_group() -> None:
    """Manage schedules (SQL is the truth; RedBeat is written through)."""


#: Rows ``batch schedules list`` prints unless told otherwise.
DEFAULT_LIMIT = 100


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--search, --job and --queue: the filters of list, enable and disable."""
    for option in reversed(
        (
            click.option("--search", help="Only names containing this text (any case)."),
            click.option("--job", help="Only schedules of this job."),
            click.option("--queue", help="Only schedules whose runs go to this queue."),
        )
    ):
        command = option(command)
    return command


@schedules_group.command("list")
@filter_options
@click.option("--enabled/--disabled", default=None, help="Only enabled (or disabled) ones.")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array, in the API's shape.")
@pass_context
def schedules_list(
    ctx: Context,
    search: str | None,
    job: str | None,
    queue: str | None,
    enabled: bool | None,
    limit: int,
    as_json: bool,
) -> None:
    """Schedules by name with their job, timing and state (the first --limit that match)."""
    where = schedule_lists.ScheduleFilter(search=search, job=job, queue=queue, enabled=enabled)
    with ctx.core.reading() as session:
        rows, total = schedule_lists.find_schedules(session, ctx.core.jobs, where, limit=limit)
    if as_json:
        click.echo(json.dumps([schedules.schedule_as_dict(row) for row in rows], indent=2))
    else:
        for row in rows:
            timing = (
                f"cron '{row.cron}' ({row.timezone})"
                if row.cron
                else f"every {row.interval_seconds}s"
            )
            state = "enabled" if row.enabled else "disabled"
            click.echo(f"{row.name:<28} {row.job:<24} {timing:<32} {state}")
    if total > len(rows):
        # With --json on stderr, so that stdout stays one JSON array.
        more = f"... and {total - len(rows)} more (of {total}; raise --limit or filter)"
        click.echo(more, err=as_json)


@schedules_group.command(
    "import", short_help="Apply the files in PATH, overwriting edits made in the admin."
)
@click.argument("path", type=click.Path(path_type=Path), default=DEFAULT_SCHEDULES_DIR)
@click.option(
    "--revalidate",
    is_flag=True,
    help="Parse and validate every file, even those unchanged since their last import.",
)
@pass_context
def schedules_import(ctx: Context, path: Path, revalidate: bool) -> None:
    """Apply the schedule files in PATH (a .toml file or a folder; default schedules/).

    Each schedule that has a file in PATH becomes what its file says: this OVERWRITES the
    edits made to it in the admin, the API or the CLI (enable and disable included). Run
    `batch schedules diff` first to see what it will change. Schedules without a file are left
    alone. Prints one line per schedule: created, updated (with each field's old -> new value)
    or unchanged.

    A file unchanged since its last import, whose schedule was not edited another way since,
    is not parsed again (10,000 unchanged files: 0.09 s). Every file is parsed again
    when batch is upgraded, or the jobs, their params or BATCH_QUEUES change; --revalidate
    parses every file whatever.
    """
    changes = schedules.import_schedules(
        ctx.core, ctx.celery, path, actor=cli_actor(), revalidate=revalidate
    )
    for change in changes:
        click.echo(change.describe())


@schedules_group.command(
    "diff", short_help="Show what import would change; exit 1 if anything, 0 if nothing."
)
@click.argument("path", type=click.Path(path_type=Path), default=DEFAULT_SCHEDULES_DIR)
@pass_context
def schedules_diff(ctx: Context, path: Path) -> None:
    """Show what `batch schedules import PATH` would change in SQL; writes nothing.

    One line per schedule that differs: "would create NAME" (only in the files) or "would
    update NAME: field: SQL value -> file value; ...". Exits 0 when the files and SQL agree,
    1 when they differ, 2 on bad input.
    """
    drift = [c for c in schedules.diff_schedules(ctx.core, path) if c.action != "unchanged"]
    for change in drift:
        click.echo(change.describe(planned=True))
    if drift:
        sys.exit(DRIFT_EXIT)


@schedules_group.command("enable")
@click.argument("names", nargs=-1)
@filter_options
@click.option("--yes", is_flag=True, help="Do not ask before changing what the filters match.")
@click.option(
    "--catch-up",
    is_flag=True,
    help="Also run the fires each one missed while disabled (a backfill; NAMES only).",
)
@pass_context
def schedules_enable(ctx: Context, names: tuple[str, ...], catch_up: bool, **options: Any) -> None:
    """Enable the schedules NAMES, or every one the filters match. The fires missed while a
    schedule was disabled are skipped, unless --catch-up."""
    if not catch_up:
        _set_enabled(ctx, names, True, **options)
        return
    filters = {key: value for key, value in options.items() if key != "yes"}
    if not names or schedule_lists.ScheduleFilter(**filters):
        fail("--catch-up takes schedule NAMES, not filters")
    for name in dict.fromkeys(names):
        backfill = resume_and_catch_up(ctx.core, ctx.celery, name, actor=cli_actor())
        missed = f": backfill {backfill.id} runs what it missed" if backfill else ", nothing missed"
        click.echo(f"enabled {name}{missed}")


@schedules_group.command("disable")
@click.argument("names", nargs=-1)
@filter_options
@click.option("--yes", is_flag=True, help="Do not ask before changing what the filters match.")
@pass_context
def schedules_disable(ctx: Context, names: tuple[str, ...], **options: Any) -> None:
    """Disable the schedules NAMES, or every one the filters match (they stay in SQL)."""
    _set_enabled(ctx, names, False, **options)


def _set_enabled(
    ctx: Context, names: tuple[str, ...], enabled: bool, *, yes: bool, **filters: str | None
) -> None:
    verb = "enabled" if enabled else "disabled"
    where = schedule_lists.ScheduleFilter(**filters)
    if bool(names) == bool(where):
        fail("give either schedule NAMES or filters (--search, --job, --queue)")
    if where:
        with ctx.core.reading() as session:
            names = tuple(schedule_lists.names_matching(session, ctx.core.jobs, where))
        if not names:
            click.echo("no schedule matches")
            return
        if not yes:
            click.confirm(f"{verb[:-1].capitalize()} {len(names)} schedule(s)?", abort=True)
    done = schedules.set_enabled_many(ctx.core, ctx.celery, names, enabled, actor=cli_actor())
    if where:
        unchanged = len(names) - len(done.changed)
        click.echo(f"{verb} {len(done.changed)} schedule(s), {unchanged} already {verb}")
    else:
        for name in dict.fromkeys(names):
            click.echo(f"{verb} {name}")


@schedules_group.command("remove")
@click.argument("name")
@pass_context
def schedules_remove(ctx: Context, name: str) -> None:
    """Delete schedule NAME."""
    schedules.remove_schedule(ctx.core, ctx.celery, name, actor=cli_actor())
    click.echo(f"removed {name}")


COMMANDS = [schedules_group]
