"""The one settings object, read once from environment variables."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from batch.constants import DEFAULT_QUEUES

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: A queue name: letters, digits, "_", "." and "-", first a letter or digit, at most 100
#: characters (the length of the runs' and schedules' queue columns).
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
#: Keys kombu's Redis transport keeps for itself beside the queues (RabbitMQ keeps "amq.*").
BROKER_RESERVED_QUEUES = frozenset({"unacked", "unacked_index", "unacked_mutex"})
#: Written by ``batch dev`` while it runs: the URLs its processes use, so that commands run
#: from the project directory reach the same system without any environment set.
SERVICES_FILE = Path("instance") / "services.json"
#: The settings ``batch dev`` writes to SERVICES_FILE (the environment always wins).
SERVICE_VARIABLES = ("REDIS_URL", "BROKER_URL", "DATABASE_URL")


def _default_database_url() -> str:
    return f"sqlite:///{Path('instance') / 'batch.db'}"


def _split(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def check_alert_targets(settings: Settings) -> None:
    """Raise ValueError, naming the variable, unless the alerts' webhooks and e-mail can work."""
    for url in settings.alert_webhooks:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"BATCH_ALERT_WEBHOOKS: not an http(s) URL: {shown_url(url)!r}")
    if settings.alert_webhooks and not settings.alert_secret:
        raise ValueError(
            "BATCH_ALERT_SECRET must be set when BATCH_ALERT_WEBHOOKS is: webhooks are signed"
        )
    if settings.alert_emails and not (settings.smtp_host and settings.smtp_from):
        raise ValueError(
            "BATCH_SMTP_HOST and BATCH_SMTP_FROM must be set when BATCH_ALERT_EMAILS is"
        )
    for address in settings.alert_emails:
        if "@" not in address or any(c.isspace() or c in "<>," for c in address):
            raise ValueError(f"BATCH_ALERT_EMAILS: not an e-mail address: {address!r}")
    if settings.alert_retry_hours < 1:
        raise ValueError("BATCH_ALERT_RETRY_HOURS must be at least 1")
    if settings.beat_silent_seconds < 5:
        raise ValueError("BATCH_BEAT_SILENT_SECONDS must be at least 5 (beat reports every 1 s)")
    if settings.no_worker_alert_seconds < 0 or settings.queue_age_alert_seconds < 0:
        raise ValueError(
            "BATCH_NO_WORKER_ALERT_SECONDS and BATCH_QUEUE_AGE_ALERT_SECONDS must be 0 or more"
        )


def shown_url(url: str) -> str:
    """A URL safe to log: its scheme, host and port; a path or query may hold a token."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}/..."


def check_queue_names(queues: tuple[str, ...]) -> None:
    """Raise ValueError, naming BATCH_QUEUES and the name, unless every queue name is usable."""
    if not queues:
        raise ValueError("BATCH_QUEUES names no queue: give at least one")
    for name in queues:
        if not QUEUE_NAME.fullmatch(name):
            raise ValueError(
                f"BATCH_QUEUES: {name!r} is not a queue name (letters, digits, '_', '.', '-', "
                "first a letter or digit, at most 100 characters)"
            )
        if name in BROKER_RESERVED_QUEUES or name.startswith("amq."):
            raise ValueError(f"BATCH_QUEUES: {name!r} is reserved by the broker")
        if queues.count(name) > 1:
            raise ValueError(f"BATCH_QUEUES: {name!r} is listed twice")


def _process_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def read_services_file(path: Path = SERVICES_FILE) -> dict[str, str]:
    """The URLs that a ``batch dev`` still running wrote to ``path``, else {}."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or not _process_alive(data.get("pid")):
        return {}
    return {k: v for k, v in data.items() if k in SERVICE_VARIABLES and isinstance(v, str)}


def write_services_file(urls: Mapping[str, str], path: Path = SERVICES_FILE) -> None:
    """Record the URLs this process's system uses (mode 0600: a URL may hold a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    temporary.touch(mode=0o600)
    temporary.write_text(json.dumps({"pid": os.getpid(), **urls}, indent=2) + "\n")
    temporary.replace(path)


def remove_services_file(path: Path = SERVICES_FILE) -> None:
    """Remove ``path`` if this process wrote it (another ``batch dev`` may own it now)."""
    try:
        owner = json.loads(path.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return
    if owner == os.getpid():
        path.unlink(missing_ok=True)


#: How /metrics groups its histograms (BATCH_METRICS_HISTOGRAMS).
METRICS_HISTOGRAMS = ("schedule", "job", "off")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of batch with its default; see docs/configuration.md."""

    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = ""
    database_url: str = field(default_factory=_default_database_url)
    secret_key: str = ""
    job_modules: tuple[str, ...] = ()
    queues: tuple[str, ...] = DEFAULT_QUEUES
    worker_concurrency: int = 0
    chunks_per_process: int = 4
    finish_deadline_seconds: int = 600
    reconcile_interval_seconds: int = 15
    full_reconcile_interval_seconds: int = 3600
    beat_lock_timeout_seconds: int = 5
    sweep_interval_seconds: float = 3.0
    stall_seconds: int = 15
    chunk_max_attempts: int = 4
    worker_ttl_seconds: int = 6
    cookie_secure: bool = False
    login_attempts_per_minute: int = 10
    web_port: int = 5000
    session_hours: int = 12
    login_attempts_per_account_per_minute: int = 10
    proxy_count: int = 0
    alert_webhooks: tuple[str, ...] = ()
    alert_secret: str = ""
    alert_emails: tuple[str, ...] = ()
    alert_retry_hours: int = 24
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = ""
    smtp_starttls: bool = True
    beat_silent_seconds: int = 60
    no_worker_alert_seconds: int = 60
    queue_age_alert_seconds: int = 900
    #: /metrics' histograms: one per ``schedule`` (and job), one per ``job``, or ``off``.
    metrics_histograms: str = "schedule"

    def __post_init__(self) -> None:
        check_queue_names(self.queues)
        check_alert_targets(self)
        if self.beat_lock_timeout_seconds < 3:
            # Beat sleeps up to 1 s between ticks and renews the lock every second of a tick.
            raise ValueError("BATCH_BEAT_LOCK_TIMEOUT_SECONDS must be at least 3")
        if self.session_hours < 1:
            raise ValueError("BATCH_SESSION_HOURS must be at least 1")
        if self.proxy_count < 0:
            raise ValueError("BATCH_PROXY_COUNT must be 0 or more")
        if self.metrics_histograms not in METRICS_HISTOGRAMS:
            raise ValueError(
                f"BATCH_METRICS_HISTOGRAMS must be one of {', '.join(METRICS_HISTOGRAMS)},"
                f" not {self.metrics_histograms!r}"
            )

    @property
    def effective_broker_url(self) -> str:
        """The broker URL: ``BROKER_URL`` if set, else ``REDIS_URL``."""
        return self.broker_url or self.redis_url

    @property
    def default_queue(self) -> str:
        """The first configured queue: for jobs that set no queue and tasks sent without one."""
        return self.queues[0]

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        services_file: Path | None = SERVICES_FILE,
    ) -> Settings:
        """Build settings from environment variables (``os.environ`` by default).

        ``REDIS_URL``, ``BROKER_URL`` and ``DATABASE_URL`` that the environment does not set
        come from ``services_file`` while the ``batch dev`` that wrote it runs.
        """
        found = read_services_file(services_file) if services_file else {}
        env = {**found, **(os.environ if environ is None else environ)}
        values = {
            name: parse(env[variable])
            for name, (variable, parse, _) in VARIABLES.items()
            if variable in env
        }
        if not values.get("queues", True):
            del values["queues"]  # BATCH_QUEUES set but empty: the default queues
        return cls(**values)

    def as_env(self) -> dict[str, str]:
        """The environment variables that make ``from_env`` build these settings again."""
        return {
            variable: show(getattr(self, name)) for name, (variable, _, show) in VARIABLES.items()
        }


def _flag(value: str) -> bool:
    return value.lower() in ("1", "true", "yes")


def _join(values: tuple[str, ...]) -> str:
    return ",".join(values)


#: Each setting's environment variable, how to read it, and how to write it back.
VARIABLES: dict[str, tuple[str, Callable[[str], Any], Callable[[Any], str]]] = {
    "redis_url": ("REDIS_URL", str, str),
    "broker_url": ("BROKER_URL", str, str),
    "database_url": ("DATABASE_URL", str, str),
    "secret_key": ("SECRET_KEY", str, str),
    "job_modules": ("BATCH_JOB_MODULES", _split, _join),
    "queues": ("BATCH_QUEUES", _split, _join),
    "worker_concurrency": ("WORKER_CONCURRENCY", int, str),
    "chunks_per_process": ("BATCH_CHUNKS_PER_PROCESS", int, str),
    "finish_deadline_seconds": ("BATCH_FINISH_DEADLINE_SECONDS", int, str),
    "reconcile_interval_seconds": ("BATCH_RECONCILE_INTERVAL_SECONDS", int, str),
    "full_reconcile_interval_seconds": ("BATCH_FULL_RECONCILE_INTERVAL_SECONDS", int, str),
    "beat_lock_timeout_seconds": ("BATCH_BEAT_LOCK_TIMEOUT_SECONDS", int, str),
    "sweep_interval_seconds": ("BATCH_SWEEP_INTERVAL_SECONDS", float, str),
    "stall_seconds": ("BATCH_STALL_SECONDS", int, str),
    "chunk_max_attempts": ("BATCH_CHUNK_MAX_ATTEMPTS", int, str),
    "worker_ttl_seconds": ("BATCH_WORKER_TTL_SECONDS", int, str),
    "cookie_secure": ("BATCH_COOKIE_SECURE", _flag, lambda on: "1" if on else "0"),
    "login_attempts_per_minute": ("BATCH_LOGIN_ATTEMPTS_PER_MINUTE", int, str),
    "web_port": ("PORT", int, str),
    "session_hours": ("BATCH_SESSION_HOURS", int, str),
    "login_attempts_per_account_per_minute": (
        "BATCH_LOGIN_ATTEMPTS_PER_ACCOUNT_PER_MINUTE",
        int,
        str,
    ),
    "proxy_count": ("BATCH_PROXY_COUNT", int, str),
    "alert_webhooks": ("BATCH_ALERT_WEBHOOKS", _split, _join),
    "alert_secret": ("BATCH_ALERT_SECRET", str, str),
    "alert_emails": ("BATCH_ALERT_EMAILS", _split, _join),
    "alert_retry_hours": ("BATCH_ALERT_RETRY_HOURS", int, str),
    "smtp_host": ("BATCH_SMTP_HOST", str, str),
    "smtp_port": ("BATCH_SMTP_PORT", int, str),
    "smtp_user": ("BATCH_SMTP_USER", str, str),
    "smtp_password": ("BATCH_SMTP_PASSWORD", str, str),
    "smtp_from": ("BATCH_SMTP_FROM", str, str),
    "smtp_starttls": ("BATCH_SMTP_STARTTLS", _flag, lambda on: "1" if on else "0"),
    "beat_silent_seconds": ("BATCH_BEAT_SILENT_SECONDS", int, str),
    "no_worker_alert_seconds": ("BATCH_NO_WORKER_ALERT_SECONDS", int, str),
    "queue_age_alert_seconds": ("BATCH_QUEUE_AGE_ALERT_SECONDS", int, str),
    "metrics_histograms": ("BATCH_METRICS_HISTOGRAMS", str, str),
}
