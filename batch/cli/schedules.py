"""``batch schedules list|import|diff|enable|disable|remove``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from batch import schedules
from batch.cli import Context, cli_actor, pass_context

DEFAULT_SCHEDULES_DIR = Path("schedules")
#: ``batch schedules diff`` exits with this when the files and SQL differ (as diff(1) does).
DRIFT_EXIT = 1


@click.group("schedules")
def schedules_group() -> None:
    """Manage schedules (SQL is the truth; RedBeat is written through)."""


@schedules_group.command("list")
@pass_context
def schedules_list(ctx: Context) -> None:
    """Every schedule with its job, timing and state."""
    with ctx.core.reading() as session:
        rows = schedules.list_schedules(session)
    for row in rows:
        timing = (
            f"cron '{row.cron}' ({row.timezone})" if row.cron else f"every {row.interval_seconds}s"
        )
        state = "enabled" if row.enabled else "disabled"
        click.echo(f"{row.name:<28} {row.job:<24} {timing:<32} {state}")


@schedules_group.command(
    "import", short_help="Apply the files in PATH, overwriting edits made in the admin."
)
@click.argument("path", type=click.Path(path_type=Path), default=DEFAULT_SCHEDULES_DIR)
@pass_context
def schedules_import(ctx: Context, path: Path) -> None:
    """Apply the schedule files in PATH (a .toml file or a folder; default schedules/).

    Each schedule that has a file in PATH becomes what its file says: this OVERWRITES the
    edits made to it in the admin, the API or the CLI (enable and disable included). Run
    `batch schedules diff` first to see what it will change. Schedules without a file are left
    alone. Prints one line per schedule: created, updated (with each field's old -> new value)
    or unchanged.
    """
    changes = schedules.import_schedules(ctx.core, ctx.celery, path, actor=cli_actor())
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
@click.argument("name")
@pass_context
def schedules_enable(ctx: Context, name: str) -> None:
    """Enable schedule NAME."""
    schedules.set_enabled(ctx.core, ctx.celery, name, True, actor=cli_actor())
    click.echo(f"enabled {name}")


@schedules_group.command("disable")
@click.argument("name")
@pass_context
def schedules_disable(ctx: Context, name: str) -> None:
    """Disable schedule NAME (it stays in SQL, it stops firing)."""
    schedules.set_enabled(ctx.core, ctx.celery, name, False, actor=cli_actor())
    click.echo(f"disabled {name}")


@schedules_group.command("remove")
@click.argument("name")
@pass_context
def schedules_remove(ctx: Context, name: str) -> None:
    """Delete schedule NAME."""
    schedules.remove_schedule(ctx.core, ctx.celery, name, actor=cli_actor())
    click.echo(f"removed {name}")


COMMANDS = [schedules_group]
