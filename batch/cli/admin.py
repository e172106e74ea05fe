"""``batch db upgrade`` and ``batch demo seed``."""

from __future__ import annotations

import click

from batch import demo, dev, migrate
from batch.cli import Context, pass_context


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
@pass_context
def demo_seed(ctx: Context, orders: int, seed: int) -> None:
    """Fill the orders table with realistic orders over the last 30 days."""
    with click.progressbar(
        length=orders, label="orders", file=click.get_text_stream("stderr")
    ) as bar:
        written = demo.seed_orders(ctx.core.engine, orders, seed=seed, progress=bar.update)
    click.echo(f"seeded {written} orders")


@click.command("dev")
@click.option("--orders", default=200_000, show_default=True, help="Demo orders if none exist.")
@click.option("--port", default=5000, show_default=True, help="Port of the web process.")
@pass_context
def dev_command(ctx: Context, orders: int, port: int) -> None:
    """Migrate, seed, import schedules/, then run web + beat + worker (the Procfile)."""

    def say(message: str) -> None:
        click.echo(f"batch dev: {message}", err=True)

    raise SystemExit(dev.run(ctx.settings, orders=orders, port=port, say=say))


COMMANDS = [db_group, demo_group, dev_command]
