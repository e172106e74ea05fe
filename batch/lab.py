"""A private batch system to hurt on purpose: a redis-server of its own, worker nodes run as
real processes, and a client to submit runs and read them back.

The recovery tests and ``bench/faults.py`` inject their faults here (``kill -9`` of a node,
a flush, a restart of Redis) without touching anyone else's Redis or workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from subprocess import Popen
from typing import Any

from sqlalchemy import func, select

from batch import runs
from batch.celery_app import close_celery, create_celery
from batch.core import Core
from batch.models import FINISHED_STATES, QUEUED, RUNNING, Run, RunChunk
from batch.processes import kill_node, start_worker, stop_process
from batch.redis_server import PrivateRedis, start_private_redis
from batch.settings import Settings


@dataclass
class Lab:
    """Settings on a private redis-server, the nodes started on them, and a client."""

    settings: Settings
    redis_server: PrivateRedis
    directory: Path
    environ: dict[str, str]
    core: Core
    celery: Any
    cwd: Path | None = None
    nodes: list[Popen[bytes]] = field(default_factory=list)

    @classmethod
    def open(
        cls, base: Settings, directory: Path, *, environ: dict[str, str], cwd: Path | None = None,
        **changes: Any,
    ) -> Lab:  # fmt: skip
        """Start a redis-server in ``directory`` and settings ``base`` + ``changes`` on it.

        ``environ`` is the environment the nodes start with, before the settings' own.
        """
        server = start_private_redis(directory / "redis")
        settings = replace(base, redis_url=server.url, **changes)
        core = Core(settings)
        return cls(settings, server, directory, environ, core, create_celery(settings, core), cwd)

    def start_node(
        self, name: str, concurrency: int = 2, queues: tuple[str, ...] | None = None
    ) -> Popen[bytes]:
        """A worker node on ``queues`` (every configured one by default); returns once it has
        announced itself."""
        node = start_worker(
            {**self.environ, **self.settings.as_env()}, self.directory / f"{name}.log",
            name=name, redis_url=self.settings.redis_url, queues=queues, concurrency=concurrency,
            cwd=self.cwd,
        )  # fmt: skip
        self.nodes.append(node)
        return node

    def kill_node(self, node: Popen[bytes]) -> None:
        """``kill -9`` of a whole node: its main process and its pool."""
        kill_node(node)

    def kill_redis(self) -> None:
        """``kill -9`` of the redis-server (it keeps nothing on disk)."""
        self.redis_server.process.kill()
        self.redis_server.process.wait()

    def start_redis(self) -> None:
        """Start the redis-server again, empty, on the same port."""
        port = int(self.settings.redis_url.rsplit(":", 1)[1].split("/")[0])
        self.redis_server = start_private_redis(self.directory / "redis", port=port)

    def submit(self, job: str, params: dict[str, Any]) -> str:
        """Queue a run as ``batch run`` does; its id."""
        return runs.submit_run(self.core, self.celery, job, params, trigger="lab")

    def chunks(self, run_id: str, status: str) -> int:
        """How many of the run's chunks are in ``status``."""
        with self.core.reading() as session:
            return session.scalar(
                select(func.count())
                .select_from(RunChunk)
                .where(RunChunk.run_id == run_id, RunChunk.status == status)
            )

    def going(self) -> int:
        """Runs still queued or running."""
        with self.core.reading() as session:
            return session.scalar(
                select(func.count()).select_from(Run).where(Run.status.in_((QUEUED, RUNNING)))
            )

    def finished(self, run_id: str) -> Run | None:
        """The run once it has ended, else None."""
        with self.core.reading() as session:
            run = session.get(Run, run_id)
        return run if run is not None and run.status in FINISHED_STATES else None

    def logs(self) -> str:
        """Every node's log, one after the other."""
        return "\n".join(path.read_text() for path in sorted(self.directory.glob("*.log")))

    def close(self) -> None:
        """Stop the nodes still running, the client and the redis-server."""
        for node in self.nodes:
            if node.poll() is None:
                stop_process(node)
        close_celery(self.celery)
        self.redis_server.stop()


def wait_until(condition: Callable[[], Any], timeout: float = 30, poll: float = 0.05) -> Any:
    """``condition()``'s first truthy value; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout}s")
        time.sleep(poll)
