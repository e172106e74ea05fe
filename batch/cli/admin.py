"""``batch db upgrade`` and ``batch demo seed``."""

from __future__ import annotations

import sys

import click

from batch import demo, dev, migrate
from batch.cli import Context, pass_context
from batch.settings import Settings


@click.group("db")
def db_group() -> None:
    """Database maintenance."""


@db_group.command("upgrade")
@pass_context
def db_upgrade(ctx: Context) -> None:
    """Apply all migrations to DATABASE_URL."""
    migrate.upgrade(ctx.settings.database_url)
    click.echo("database is up to date")


@click.group("demo")
def demo_group() -> None:
    """Demo data."""


@demo_group.command("seed")
@click.option("--orders", default=100_000, show_default=True, type=click.IntRange(0, 100_000_000))
@click.option("--seed", default=7, show_default=True, help="Random seed (same seed, same data).")
@click.option("--replace", is_flag=True, help="Delete every existing order first.")
@pass_context
def demo_seed(ctx: Context, orders: int, seed: int, replace: bool) -> None:
    """Add realistic orders over the last 30 days to the orders table (see --replace)."""
    with click.progressbar(length=orders, label="orders", file=sys.stderr) as bar:
        total = demo.seed_orders(
            ctx.core.engine, orders, seed=seed, progress=bar.update, replace=replace
        )
    verb = "replaced every order with" if replace else "added"
    click.echo(f"{verb} {orders} demo orders: {total} orders in the table")


@click.command("dev")
@click.option("--orders", default=200_000, show_default=True, help="Demo orders if none exist.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Port of the web process  [default: $PORT, else 5000]",
)
def dev_command(orders: int, port: int | None) -> None:
    """Migrate, seed, import new schedules from schedules/, then run web + beat + worker."""

    def say(message: str) -> None:
        click.echo(f"batch dev: {message}", err=True)

    # Its own settings come from the environment alone: a services file left by another
    # batch dev in this directory describes that one's system, not the one to start.
    settings = Settings.from_env(services_file=None)
    raise SystemExit(dev.run(settings, orders=orders, port=port, say=say))


COMMANDS = [db_group, demo_group, dev_command]
