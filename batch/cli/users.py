"""``batch users add|list|password|remove`` and ``batch tokens add|list|remove``."""

from __future__ import annotations

import click

from batch import users
from batch.cli import Context, pass_context
from batch.times import show_utc


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


@users_group.command("list")
@pass_context
def users_list(ctx: Context) -> None:
    """Every user: created, last seen, live sessions."""
    _echo_accounts(users.list_users(ctx.core), "LAST SEEN", sessions=True)


@users_group.command("password")
@click.argument("name")
@click.password_option(help="Prompted (twice) when not given.")
@pass_context
def users_password(ctx: Context, name: str, password: str) -> None:
    """Give user NAME a new password; every session they have ends."""
    users.set_password(ctx.core, name, password)
    click.echo(f"changed the password of {name}; their sessions ended")


@users_group.command("remove")
@click.argument("name")
@pass_context
def users_remove(ctx: Context, name: str) -> None:
    """Delete user NAME; every session they have ends."""
    users.remove_user(ctx.core, name)
    click.echo(f"removed user {name}; their sessions ended")


@click.group("tokens")
def tokens_group() -> None:
    """API bearer tokens."""


@tokens_group.command("add")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(users.TOKEN_SCOPES),
    default=users.API_SCOPE,
    show_default=True,
    help="api: the JSON API and /metrics; metrics: only /metrics (for Prometheus).",
)
@pass_context
def tokens_add(ctx: Context, name: str, scope: str) -> None:
    """Create API token NAME and print it once (only its hash is stored)."""
    token = users.add_token(ctx.core, name, scope)
    click.echo(token)


@tokens_group.command("list")
@pass_context
def tokens_list(ctx: Context) -> None:
    """Every API token: created, last used, scope (never the token)."""
    _echo_accounts(users.list_tokens(ctx.core), "LAST USED", sessions=False)


@tokens_group.command("remove")
@click.argument("name")
@pass_context
def tokens_remove(ctx: Context, name: str) -> None:
    """Delete API token NAME: requests that send it are refused from now on."""
    users.remove_token(ctx.core, name)
    click.echo(f"removed token {name}")


def _echo_accounts(accounts: list[users.Account], last: str, *, sessions: bool) -> None:
    if not accounts:
        return
    width = max(len("NAME"), *(len(account.name) for account in accounts))
    rows = [("NAME", "CREATED", last, "SESSIONS" if sessions else "SCOPE")]
    for account in accounts:
        used = show_utc(account.last_used_at)
        created = show_utc(account.created_at)
        rows.append(
            (account.name, created, used, str(account.sessions) if sessions else account.scope)
        )
    for name, created, used, last_column in rows:
        line = f"{name:<{width}}  {created:<23}  {used:<23}  {last_column}"
        click.echo(line.rstrip())


COMMANDS = [users_group, tokens_group]
