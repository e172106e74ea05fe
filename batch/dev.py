"""``batch dev``: everything ``make run`` does after installing, then the Procfile."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, select

from batch import demo, migrate, redis_server, users
from batch.celery_app import close_celery, create_celery
from batch.core import Core
from batch.exceptions import Conflict
from batch.models import Order
from batch.schedules import ScheduleChange, import_schedules
from batch.settings import (
    SERVICES_FILE,
    Settings,
    remove_services_file,
    write_services_file,
)

log = logging.getLogger(__name__)

PRIVATE_REDIS_DIR = Path("instance") / "redis"
DEMO_USER = "demo"
DEMO_LOGIN_FILE = Path("instance") / "demo-login.txt"
SECRET_KEY_FILE = Path("instance") / "secret-key"


def ensure_redis(
    settings: Settings, say: Callable[[str], None]
) -> redis_server.PrivateRedis | None:
    """Start a private redis-server when ``settings.redis_url`` does not answer."""
    shown = without_password(settings.redis_url)
    if redis_server.is_reachable(settings.redis_url):
        say(f"using Redis at {shown}")
        return None
    server = redis_server.start_private_redis(PRIVATE_REDIS_DIR)
    say(
        f"Redis at {shown} is not reachable: started a private redis-server "
        f"({server.binary}) at {without_password(server.url)}"
    )
    return server


def without_password(url: str) -> str:
    """``url`` as it may be shown or logged: its password, if any, as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def prepare(
    settings: Settings, *, orders: int, say: Callable[[str], None]
) -> tuple[str, str | None]:
    """Migrate, seed demo orders if there are none, create the schedules of ``schedules/``
    that do not exist yet (an operator's edits stay), make a demo user.

    Returns the demo login (its password is None when it is no longer known).
    """
    migrate.upgrade(settings.database_url)
    core = Core(settings)
    celery = create_celery(settings, core)
    try:
        with core.transaction() as session:
            existing = session.scalar(select(func.count()).select_from(Order))
        if existing == 0 and orders:
            say(f"seeding {orders} demo orders")
            demo.seed_orders(core.engine, orders)
        schedules_dir = Path("schedules")
        if schedules_dir.is_dir():
            changes = import_schedules(
                core, celery, schedules_dir, actor="batch dev", only_new=True
            )
            say(_describe_import(changes, schedules_dir))
        return demo_login(core)
    finally:
        close_celery(celery)


def _describe_import(changes: list[ScheduleChange], directory: Path) -> str:
    created = [change.name for change in changes if change.action == "created"]
    drifted = [change.name for change in changes if change.action == "kept" and change.fields]
    message = f"schedules from {directory}/: {len(created)} created"
    if created:
        message += f" ({', '.join(created)})"
    message += f", {len(changes) - len(created)} already in the database and left as they are"
    if drifted:
        message += (
            f"; {len(drifted)} differ from their file ({', '.join(drifted)}): "
            "'batch schedules diff' shows how, 'batch schedules import' applies the files"
        )
    return message


def demo_login(core: Core) -> tuple[str, str | None]:
    """Create the demo user once with a random password kept in ``instance/``."""
    DEMO_LOGIN_FILE.parent.mkdir(parents=True, exist_ok=True)
    if DEMO_LOGIN_FILE.exists():
        return DEMO_USER, DEMO_LOGIN_FILE.read_text().strip()
    password = secrets.token_urlsafe(12)
    try:
        users.add_user(core, DEMO_USER, password)
    except Conflict:
        return DEMO_USER, None
    DEMO_LOGIN_FILE.touch(mode=0o600)
    DEMO_LOGIN_FILE.write_text(password + "\n")
    return DEMO_USER, password


def secret_key() -> str:
    """A random SECRET_KEY kept in ``instance/`` so sessions survive a restart."""
    SECRET_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    if not SECRET_KEY_FILE.exists():
        SECRET_KEY_FILE.touch(mode=0o600)
        SECRET_KEY_FILE.write_text(secrets.token_hex(32))
    return SECRET_KEY_FILE.read_text().strip()


def _run_until_stopped(command: list[str], env: dict[str, str]) -> int:
    # honcho stops its processes on SIGINT/SIGTERM; pass ours on and wait for it, so the
    # private Redis outlives the worker and beat that use it. Being asked to stop is the
    # normal end of a dev session: exit 0, so make does not report "Error 130".
    process = subprocess.Popen(command, env=env)
    stopped: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopped.append(signum)
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopped else code


def run(
    settings: Settings, *, orders: int, port: int | None = None, say: Callable[[str], None]
) -> int:
    """Prepare, then run the Procfile with honcho until interrupted; returns its exit code.

    While it runs, ``instance/services.json`` tells commands run from this directory which
    Redis, broker and database to use.
    """
    port = port or settings.web_port
    server = ensure_redis(settings, say)
    if server is not None:
        settings = replace(settings, redis_url=server.url)
    write_services_file(
        {
            "REDIS_URL": settings.redis_url,
            "BROKER_URL": settings.broker_url,
            "DATABASE_URL": settings.database_url,
        }
    )
    say(f"batch commands run from this directory use the same services ({SERVICES_FILE})")
    try:
        name, password = prepare(settings, orders=orders, say=say)
        env = {
            **os.environ,
            "REDIS_URL": settings.redis_url,
            "DATABASE_URL": settings.database_url,
            "SECRET_KEY": settings.secret_key or secret_key(),
            # The Procfile's commands live beside this interpreter (the virtualenv's bin/).
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        }
        login = f"{name} / {password}" if password else f"{name} (password in {DEMO_LOGIN_FILE})"
        say(f"starting web, beat and worker: open http://127.0.0.1:{port}/ and sign in as {login}")
        command = [sys.executable, "-m", "honcho", "start", "--port", str(port)]
        return _run_until_stopped(command, env)
    finally:
        remove_services_file()
        if server is not None:
            server.stop()
            say("stopped the private redis-server")
