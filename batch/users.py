"""Admin users (hashed passwords) and API bearer tokens (stored as SHA-256)."""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import update
from werkzeug.security import check_password_hash, generate_password_hash

from batch.core import Core
from batch.db import utcnow
from batch.exceptions import Conflict, UserError
from batch.models import ApiToken, User

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
MIN_PASSWORD_LENGTH = 8
TOKEN_BYTES = 32
# Checked against when the user is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise UserError(f"bad name {name!r}: use letters, digits and . _ @ - (at most 100)")


def add_user(core: Core, name: str, password: str) -> None:
    """Create an admin user; Conflict if the name is taken."""
    _check_name(name)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    with core.transaction() as session:
        if session.get(User, name) is not None:
            raise Conflict(f"user {name!r} already exists")
        session.add(User(name=name, password_hash=generate_password_hash(password)))


def check_login(core: Core, name: str, password: str) -> bool:
    """Whether ``password`` is the password of user ``name``."""
    with core.reading() as session:
        user = session.get(User, name)
    return check_password_hash(user.password_hash if user else _DUMMY_HASH, password) and bool(user)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_token(core: Core, name: str) -> str:
    """Create an API token called ``name``; returns the token (shown once, stored hashed)."""
    _check_name(name)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with core.transaction() as session:
        if session.get(ApiToken, name) is not None:
            raise Conflict(f"token {name!r} already exists")
        session.add(ApiToken(name=name, token_hash=_token_hash(token)))
    return token


def token_owner(core: Core, token: str) -> str | None:
    """The name of the API token ``token``, or None when it is not a known token."""
    with core.transaction() as session:
        name = session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == _token_hash(token))
            .values(last_used_at=utcnow())
            .returning(ApiToken.name)
        ).scalar_one_or_none()
    return name
