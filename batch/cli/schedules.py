"""``batch schedules list|import|enable|disable|remove``."""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from batch import schedules
from batch.cli import Context, pass_context

DEFAULT_SCHEDULES_DIR = Path("schedules")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


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


@schedules_group.command("import")
@click.argument("path", type=click.Path(path_type=Path), default=DEFAULT_SCHEDULES_DIR)
@pass_context
def schedules_import(ctx: Context, path: Path) -> None:
    """Create or update schedules from PATH (a .toml file or a folder; default schedules/)."""
    rows = schedules.import_schedules(ctx.core, ctx.celery, path, actor=_actor())
    click.echo(f"imported {len(rows)} schedule(s): {', '.join(row.name for row in rows)}")


@schedules_group.command("enable")
@click.argument("name")
@pass_context
def schedules_enable(ctx: Context, name: str) -> None:
    """Enable schedule NAME."""
    schedules.set_enabled(ctx.core, ctx.celery, name, True, actor=_actor())
    click.echo(f"enabled {name}")


@schedules_group.command("disable")
@click.argument("name")
@pass_context
def schedules_disable(ctx: Context, name: str) -> None:
    """Disable schedule NAME (it stays in SQL, it stops firing)."""
    schedules.set_enabled(ctx.core, ctx.celery, name, False, actor=_actor())
    click.echo(f"disabled {name}")


@schedules_group.command("remove")
@click.argument("name")
@pass_context
def schedules_remove(ctx: Context, name: str) -> None:
    """Delete schedule NAME."""
    schedules.remove_schedule(ctx.core, ctx.celery, name, actor=_actor())
    click.echo(f"removed {name}")


COMMANDS = [schedules_group]
