"""``batch users`` and ``batch tokens``: real database, one-line errors, nothing secret shown."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from batch import users
from batch.cli import main
from batch.core import Core
from batch.models import ApiToken, User, UserSession
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


def test_users_list_and_remove(core: Core) -> None:
    assert cli(core, "users", "add", "alice", "--password", "alice's password") == (
        0,
        "added user alice\n",
        "",
    )
    users.add_user(core, "bob", "bob's long password")
    session_id = users.start_session(core, "bob")
    code, out, err = cli(core, "users", "list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "CREATED", "LAST", "SEEN", "SESSIONS"]
    assert [line.split()[0] for line in lines[1:]] == ["alice", "bob"]
    # Times are shown in UTC, naming it: "2026-12-01 06:00:00 UTC".
    assert lines[1].split()[3:] == ["UTC", "-", "0"]
    assert lines[2].split()[3] == lines[2].split()[6] == "UTC" and lines[2].split()[7] == "1"
    assert "password" not in out and "pbkdf2" not in out and "scrypt" not in out
    assert cli(core, "users", "remove", "bob") == (
        0,
        "removed user bob; their sessions ended\n",
        "",
    )
    assert users.find_session(core, session_id) is None
    with core.reading() as session:
        assert session.scalars(select(User.name)).all() == ["alice"]
        assert session.scalar(select(func.count()).select_from(UserSession)) == 0


def test_a_new_password_from_the_command_line_ends_sessions(core: Core) -> None:
    users.add_user(core, "alice", "alice's password")
    session_id = users.start_session(core, "alice")
    code, out, err = cli(core, "users", "password", "alice", "--password", "a newer password")
    assert (code, out, err) == (0, "changed the password of alice; their sessions ended\n", "")
    assert users.find_session(core, session_id) is None
    assert users.check_login(core, "alice", "a newer password")
    code, out, err = cli(core, "users", "password", "alice", "--password", "short")
    assert (code, out, err) == (2, "", "error: password too short: at least 8 characters\n")
    assert users.check_login(core, "alice", "a newer password")


def test_tokens_list_and_remove(core: Core) -> None:
    secret = users.add_token(core, "ci")
    code, out, err = cli(core, "tokens", "add", "reports", "--scope", "metrics")
    assert (code, err, len(out.strip())) == (0, "", 43)
    use = users.find_token(core, secret)
    assert use is not None and (use.name, use.scope) == ("ci", "api")
    assert users.find_token(core, out.strip()).scope == "metrics"
    users.record_use(core, use)  # as the API does after a request it accepted
    code, out, err = cli(core, "tokens", "list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "CREATED", "LAST", "USED", "SCOPE"]
    assert [line.split()[0] for line in lines[1:]] == ["ci", "reports"]
    assert len(lines[1].split()) == 8 and lines[1].split()[-1] == "api"
    assert lines[2].split()[3:] == ["UTC", "-", "metrics"]
    assert secret not in out
    with core.reading() as session:
        assert session.get_one(ApiToken, "ci").token_hash not in out
    assert cli(core, "tokens", "remove", "ci") == (0, "removed token ci\n", "")
    assert users.find_token(core, secret) is None
    assert count(core, ApiToken) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["users", "remove", "ghost"], "error: no user 'ghost'\n"),
        (["users", "password", "ghost", "--password", "long enough"], "error: no user 'ghost'\n"),
        (["tokens", "remove", "ghost"], "error: no token 'ghost'\n"),
    ],
)
def test_removing_what_is_not_there_is_one_line(core: Core, args: list[str], message: str) -> None:
    users.add_user(core, "alice", "alice's password")
    users.add_token(core, "ci")
    assert cli(core, *args) == (2, "", message)
    assert count(core, User) == count(core, ApiToken) == 1


def test_a_token_scope_must_be_known(core: Core) -> None:
    code, out, err = cli(core, "tokens", "add", "ci", "--scope", "admin")
    assert (code, out) == (2, "")
    assert "'admin' is not one of 'api', 'metrics'" in err
    assert count(core, ApiToken) == 0


def test_lists_of_nothing_are_empty(core: Core) -> None:
    assert cli(core, "users", "list") == (0, "", "")
    assert cli(core, "tokens", "list") == (0, "", "")
