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

#: A Redis that has not answered within this long counts as unreachable: a hung server (a
#: stopped process, a network black hole) must not hang a request, a sweep or beat.
REDIS_TIMEOUT_SECONDS = 5.0


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
    def read_engine(self) -> Engine:
        if self.engine.dialect.name != "sqlite":
            return self.engine
        return make_engine(self.settings.database_url, for_writing=False)

    @property
    def reads_apart(self) -> bool:
        """Whether reads use their own engine (SQLite: a writing session holds the lock)."""
        return self.read_engine is not self.engine

    @cached_property
    def read_sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.read_engine)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.settings.redis_url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )

    @cached_property
    def jobs(self) -> JobRegistry:
        return JobRegistry(self.settings.job_modules, queues=self.settings.queues)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A writing session: commits on success, rolls back on error."""
        with self.sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only; on SQLite it never waits for or blocks a writer."""
        with self.read_sessions.begin() as session:
            yield session

    def _drop_engines(self, *, close: bool) -> None:
        for name in ("sessions", "read_sessions"):
            self.__dict__.pop(name, None)
        engines = {self.__dict__.pop(name, None) for name in ("engine", "read_engine")}
        for engine in engines - {None}:
            engine.dispose(close=close)

    def dispose(self) -> None:
        """Close pooled database and Redis connections; they reopen on next use."""
        self._drop_engines(close=True)
        client = self.__dict__.pop("redis", None)
        if client is not None:
            client.close()

    def after_fork(self) -> None:
        """Forget connections inherited from the parent process without closing them."""
        self._drop_engines(close=False)
        # redis-py notices the new pid and opens fresh connections by itself.
        self.__dict__.pop("redis", None)
