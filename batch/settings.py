"""The one settings object, read once from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _default_database_url() -> str:
    return f"sqlite:///{Path('instance') / 'batch.db'}"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of batch with its default; see docs/configuration.md."""

    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = ""
    database_url: str = field(default_factory=_default_database_url)
    secret_key: str = ""
    job_modules: tuple[str, ...] = ()
    worker_concurrency: int = 0
    chunks_per_process: int = 4
    finish_deadline_seconds: int = 600
    reconcile_interval_seconds: int = 60
    cookie_secure: bool = False
    login_attempts_per_minute: int = 10

    @property
    def effective_broker_url(self) -> str:
        """The broker URL: ``BROKER_URL`` if set, else ``REDIS_URL``."""
        return self.broker_url or self.redis_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        defaults = cls()
        modules = env.get("BATCH_JOB_MODULES", "")
        return cls(
            redis_url=env.get("REDIS_URL", defaults.redis_url),
            broker_url=env.get("BROKER_URL", ""),
            database_url=env.get("DATABASE_URL", defaults.database_url),
            secret_key=env.get("SECRET_KEY", defaults.secret_key),
            job_modules=tuple(m.strip() for m in modules.split(",") if m.strip()),
            worker_concurrency=int(env.get("WORKER_CONCURRENCY", defaults.worker_concurrency)),
            chunks_per_process=int(
                env.get("BATCH_CHUNKS_PER_PROCESS", defaults.chunks_per_process)
            ),
            finish_deadline_seconds=int(
                env.get("BATCH_FINISH_DEADLINE_SECONDS", defaults.finish_deadline_seconds)
            ),
            reconcile_interval_seconds=int(
                env.get("BATCH_RECONCILE_INTERVAL_SECONDS", defaults.reconcile_interval_seconds)
            ),
            cookie_secure=env.get("BATCH_COOKIE_SECURE", "").lower() in ("1", "true", "yes"),
            login_attempts_per_minute=int(
                env.get("BATCH_LOGIN_ATTEMPTS_PER_MINUTE", defaults.login_attempts_per_minute)
            ),
        )
