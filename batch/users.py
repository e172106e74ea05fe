"""Admin users (hashed passwords), their sessions and API bearer tokens (ids stored as SHA-256)."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Update,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.security import check_password_hash, generate_password_hash

from batch.core import Core
from batch.db import SQLITE_BUSY_TIMEOUT_MS, utcnow
from batch.exceptions import Conflict, NotFound, UserError
from batch.models import ApiToken, User, UserSession

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")
MIN_PASSWORD_LENGTH = 8
TOKEN_BYTES = 32
#: What a token opens: ``api`` the JSON API and /metrics, ``metrics`` only /metrics (a
#: Prometheus server's token reads, and can change nothing).
API_SCOPE, METRICS_SCOPE = "api", "metrics"
TOKEN_SCOPES = (API_SCOPE, METRICS_SCOPE)
#: A token's ``last_used_at`` and a session's ``last_seen_at`` are written at most this often.
TOUCH_INTERVAL = timedelta(minutes=1)
# Checked against when the user is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


@dataclass(frozen=True)
class Account:
    """A user or an API token as listed: its name and times, never a secret."""

    name: str
    created_at: datetime
    #: A token's last use, or the last request of a user's live sessions (within a minute).
    last_used_at: datetime | None
    #: A user's live sessions (0 for a token).
    sessions: int = 0
    #: A token's scope (TOKEN_SCOPES); "" for a user.
    scope: str = ""


@dataclass(frozen=True)
class Use:
    """A valid token or session: whose it is, and the update that records this use (None
    when the last one recorded is less than TOUCH_INTERVAL old)."""

    name: str
    record: Update | None = None
    #: A token's scope (TOKEN_SCOPES); "" for a session.
    scope: str = ""


def _check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise UserError(f"bad name {name!r}: use letters, digits and . _ @ - (at most 100)")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")


def add_user(core: Core, name: str, password: str) -> None:
    """Create an admin user; Conflict if the name is taken."""
    _check_name(name)
    _check_password(password)
    with core.transaction() as session:
        if session.get(User, name) is not None:
            raise Conflict(f"user {name!r} already exists")
        session.add(User(name=name, password_hash=generate_password_hash(password)))


def _check_lookup(kind: str, name: str) -> None:
    # A name no user or token can have is not looked up: on PostgreSQL a NUL byte in it
    # would be an error, not a miss.
    if not NAME_RE.fullmatch(name):
        raise NotFound(f"no {kind} {name!r}")


def check_login(core: Core, name: str, password: str) -> bool:
    """Whether ``password`` is the password of user ``name``."""
    user = None
    if NAME_RE.fullmatch(name):
        with core.reading() as session:
            user = session.get(User, name)
    return check_password_hash(user.password_hash if user else _DUMMY_HASH, password) and bool(user)


def sign_in(core: Core, name: str, password: str) -> str | None:
    """A new session id for user ``name`` if ``password`` is theirs, else None."""
    if not check_login(core, name, password):
        return None
    try:
        return start_session(core, name)
    except NotFound:  # removed since its password was checked
        return None


def set_password(core: Core, name: str, password: str) -> None:
    """Give user ``name`` a new password and end every session they have."""
    _check_password(password)
    _check_lookup("user", name)
    with core.transaction() as session:
        user = session.get(User, name)
        if user is None:
            raise NotFound(f"no user {name!r}")
        user.password_hash = generate_password_hash(password)
        session.execute(delete(UserSession).where(UserSession.user_name == name))


def remove_user(core: Core, name: str) -> None:
    """Delete user ``name`` and end every session they have; NotFound if there is none."""
    _check_lookup("user", name)
    with core.transaction() as session:
        session.execute(delete(UserSession).where(UserSession.user_name == name))
        if session.execute(delete(User).where(User.name == name)).rowcount != 1:
            raise NotFound(f"no user {name!r}")


def list_users(core: Core) -> list[Account]:
    """Every user by name, with their live sessions."""
    live = (UserSession.user_name == User.name) & (UserSession.expires_at > utcnow())
    query = (
        select(
            User.name,
            User.created_at,
            func.max(UserSession.last_seen_at),
            func.count(UserSession.id_hash),
        )
        .outerjoin(UserSession, live)
        .group_by(User.name, User.created_at)
        .order_by(User.name)
    )
    with core.reading() as session:
        return [Account(*row) for row in session.execute(query)]


def start_session(core: Core, name: str) -> str:
    """Open a session for user ``name``; returns its id, for the signed cookie only."""
    session_id = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    _check_lookup("user", name)
    with core.transaction() as session:
        if session.get(User, name) is None:
            raise NotFound(f"no user {name!r}")
        # Sessions past their end go whenever someone signs in: the table stays small.
        session.execute(delete(UserSession).where(UserSession.expires_at <= now))
        session.add(
            UserSession(
                id_hash=_token_hash(session_id),
                user_name=name,
                created_at=now,
                expires_at=now + timedelta(hours=core.settings.session_hours),
                last_seen_at=now,
            )
        )
    return session_id


# Every request looks up its session or token: these statements are built once (building
# one costs as much as running it).
_LIVE_SESSION = (
    select(UserSession.user_name, UserSession.last_seen_at)
    .join(User, User.name == UserSession.user_name)
    .where(UserSession.id_hash == bindparam("id_hash"), UserSession.expires_at > bindparam("now"))
)
_TOKEN = select(ApiToken.name, ApiToken.last_used_at, ApiToken.scope).where(
    ApiToken.token_hash == bindparam("token_hash")
)


def find_session(core: Core, session_id: str) -> Use | None:
    """The live session ``session_id`` as a Use of its user, or None; only reads."""
    now = utcnow()
    id_hash = _token_hash(session_id)
    with core.reading() as session:
        row = session.execute(_LIVE_SESSION, {"id_hash": id_hash, "now": now}).one_or_none()
    if row is None:
        return None
    record = None
    if row.last_seen_at < now - TOUCH_INTERVAL:
        record = (
            update(UserSession)
            .where(UserSession.id_hash == id_hash, _stale(UserSession.last_seen_at, now))
            .values(last_seen_at=now)
        )
    return Use(row.user_name, record)


def end_session(core: Core, session_id: str) -> None:
    """End the session ``session_id`` (signing out); nothing happens if it is gone already."""
    with core.transaction() as session:
        session.execute(delete(UserSession).where(UserSession.id_hash == _token_hash(session_id)))


def _token_hash(token: str) -> str:
    # Whatever text arrives (a header or a signed cookie may hold a lone surrogate) has a
    # hash; only the url-safe text we hand out ever matches one stored.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def add_token(core: Core, name: str, scope: str = API_SCOPE) -> str:
    """Create an API token called ``name`` opening ``scope`` (TOKEN_SCOPES); returns the
    token (shown once, stored hashed)."""
    _check_name(name)
    if scope not in TOKEN_SCOPES:
        raise UserError(f"unknown token scope {scope!r}: use one of {', '.join(TOKEN_SCOPES)}")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with core.transaction() as session:
        if session.get(ApiToken, name) is not None:
            raise Conflict(f"token {name!r} already exists")
        session.add(ApiToken(name=name, token_hash=_token_hash(token), scope=scope))
    return token


def list_tokens(core: Core) -> list[Account]:
    """Every API token by name (never the token, nor its hash)."""
    query = select(
        ApiToken.name, ApiToken.created_at, ApiToken.last_used_at, ApiToken.scope
    ).order_by(ApiToken.name)
    with core.reading() as session:
        return [
            Account(name, created, used, scope=scope)
            for name, created, used, scope in session.execute(query)
        ]


def remove_token(core: Core, name: str) -> None:
    """Delete API token ``name``: requests with it fail from now on; NotFound if there is none."""
    _check_lookup("token", name)
    with core.transaction() as session:
        if session.execute(delete(ApiToken).where(ApiToken.name == name)).rowcount != 1:
            raise NotFound(f"no token {name!r}")


def find_token(core: Core, token: str) -> Use | None:
    """The API token ``token`` as a Use of its name, or None; only reads."""
    with core.reading() as session:
        row = session.execute(_TOKEN, {"token_hash": _token_hash(token)}).one_or_none()
    if row is None:
        return None
    now = utcnow()
    record = None
    if row.last_used_at is None or row.last_used_at < now - TOUCH_INTERVAL:
        record = (
            update(ApiToken)
            .where(ApiToken.name == row.name, _stale(ApiToken.last_used_at, now))
            .values(last_used_at=now)
        )
    return Use(row.name, record, scope=row.scope)


def record_use(core: Core, use: Use) -> None:
    """Write when a token or session was last used, if that is due: at most once per
    TOUCH_INTERVAL, and only when it needs no wait for a lock."""
    if use.record is not None:
        _touch(core, use.record)


def _stale(column: Any, now: datetime) -> ColumnElement[bool]:
    return or_(column.is_(None), column < now - TOUCH_INTERVAL)


def _touch(core: Core, statement: Update) -> None:
    # Bookkeeping (when a token or a session was last used) must never make a request wait
    # for another writer, nor fail it: when the lock is taken, this update is skipped.
    try:
        with core.engine.connect() as connection, _no_lock_wait(connection):
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SET LOCAL lock_timeout = '1ms'"))
                connection.execute(statement)
    except SQLAlchemyError:
        pass


@contextmanager
def _no_lock_wait(connection: Connection) -> Iterator[None]:
    # SQLite: the writing engine waits up to its busy timeout at BEGIN IMMEDIATE; set it to
    # 0 on this connection for the update, and back before the pool hands it out again.
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.dbapi_connection
    assert raw is not None
    raw.execute("PRAGMA busy_timeout=0")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
