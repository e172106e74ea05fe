"""The core's shared resources (settings, database, Redis, jobs), created lazily."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from batch.db import make_engine, make_sessionmaker
from batch.jobs import JobRegistry
from batch.settings import Settings


class Core:
    """What the worker, beat, CLI and web app share; nothing connects until first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url, decode_responses=True)

    @cached_property
    def jobs(self) -> JobRegistry:
        return JobRegistry(self.settings.job_modules)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self.sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        """Close pooled database and Redis connections; they reopen on next use."""
        engine = self.__dict__.pop("engine", None)
        self.__dict__.pop("sessions", None)
        if engine is not None:
            engine.dispose()
        client = self.__dict__.pop("redis", None)
        if client is not None:
            client.close()

    def after_fork(self) -> None:
        """Forget connections inherited from the parent process without closing them."""
        engine = self.__dict__.pop("engine", None)
        self.__dict__.pop("sessions", None)
        if engine is not None:
            engine.dispose(close=False)
        # redis-py notices the new pid and opens fresh connections by itself.
        self.__dict__.pop("redis", None)
