"""The ``batch`` command: one entry point over the core, like the web app and the worker."""

from __future__ import annotations

import getpass
import sys
from functools import cached_property
from typing import Any

import click
import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery import Celery

from batch.celery_app import close_celery, create_celery
from batch.core import Core
from batch.exceptions import ServiceUnavailable, UserError
from batch.settings import Settings

USER_ERROR_EXIT = 2
SERVICE_ERROR_EXIT = 1


class Context:
    """What every command needs, built on first use from the environment."""

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env()

    @cached_property
    def core(self) -> Core:
        return Core(self.settings)

    @cached_property
    def celery(self) -> Celery:
        return create_celery(self.settings, self.core)

    def close(self) -> None:
        """Close whatever connections the command opened."""
        if "celery" in self.__dict__:
            close_celery(self.celery)
        elif "core" in self.__dict__:
            self.core.dispose()


pass_context = click.make_pass_decorator(Context, ensure=True)


def cli_actor() -> str:
    """Who a command acts as, in audit entries and run errors: ``cli:<login>``."""
    return f"cli:{getpass.getuser()}"


def fail(message: str) -> None:
    """Print a one-line error and exit with the user-error code."""
    click.echo(f"error: {message}", err=True)
    sys.exit(USER_ERROR_EXIT)


class BatchGroup(click.Group):
    """A group that turns the core's user errors into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            fail(str(exc))
        except click.BadParameter as exc:
            # A value of the wrong type or out of range: one line, like every other bad input
            # (a missing argument or an unknown option still gets click's usage text).
            fail(exc.format_message())
        except sqlalchemy.exc.OperationalError as exc:
            hint = " (run: batch db upgrade)" if "no such table" in str(exc.orig) else ""
            click.echo(f"error: database: {exc.orig}{hint}", err=True)
            sys.exit(SERVICE_ERROR_EXIT)
        except (
            ServiceUnavailable,
            redis.exceptions.ConnectionError,
            kombu.exceptions.OperationalError,
        ) as exc:
            click.echo(f"error: cannot reach Redis or the broker: {exc}", err=True)
            sys.exit(SERVICE_ERROR_EXIT)


@click.group(cls=BatchGroup)
@click.pass_context
def main(click_ctx: click.Context) -> None:
    """Scheduled, chunked, aggregated batch jobs."""
    context = click_ctx.ensure_object(Context)
    click_ctx.call_on_close(context.close)


def _register_commands() -> None:
    from batch.cli import admin, backfills, runs, schedules, users

    for module in (admin, backfills, runs, schedules, users):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()
