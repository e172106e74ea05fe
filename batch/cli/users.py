"""``batch users add`` and ``batch tokens add``."""

from __future__ import annotations

import click

from batch import users
from batch.cli import Context, pass_context


@click.group("users")
def users_group() -> None:
    """Admin users."""


@users_group.command("add")
@click.argument("name")
@click.password_option(help="Prompted (twice) when not given.")
@pass_context
def users_add(ctx: Context, name: str, password: str) -> None:
    """Create admin user NAME (the password is stored hashed)."""
    users.add_user(ctx.core, name, password)
    click.echo(f"added user {name}")


@click.group("tokens")
def tokens_group() -> None:
    """API bearer tokens."""


@tokens_group.command("add")
@click.argument("name")
@pass_context
def tokens_add(ctx: Context, name: str) -> None:
    """Create API token NAME and print it once (only its hash is stored)."""
    token = users.add_token(ctx.core, name)
    click.echo(token)


COMMANDS = [users_group, tokens_group]
