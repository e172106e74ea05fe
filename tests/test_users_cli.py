"""``batch users`` and ``batch tokens``: real database, one-line errors, nothing secret shown."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from batch.cli import main
from batch.core import Core
from batch.models import ApiToken, User
from tests.conftest import settings_env


def cli(core: Core, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=settings_env(core.settings), input=input)
    return result.exit_code, result.stdout, result.stderr


def count(core: Core, model: type) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("name", ["bob\n", "bob\r", "bob ", "\nbob", "b" * 101, ""])
def test_a_name_must_be_whole_and_clean(core: Core, name: str) -> None:
    code, out, err = cli(core, "users", "add", name, "--password", "long enough password")
    assert (code, out) == (2, "")
    assert err == f"error: bad name {name!r}: use letters, digits and . _ @ - (at most 100)\n"
    code, out, err = cli(core, "tokens", "add", name)
    assert (code, out) == (2, "")
    assert err.startswith("error: bad name ")
    assert count(core, User) == count(core, ApiToken) == 0
