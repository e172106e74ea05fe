"""``batch dev``'s own helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch.dev import ensure_redis, without_password
from batch.settings import Settings


def test_urls_are_shown_without_their_password() -> None:
    assert without_password("redis://:s3cret@db.example:6380/1") == "redis://:***@db.example:6380/1"
    assert without_password("amqp://ann:s3cret@mq/vh") == "amqp://ann:***@mq/vh"
    assert without_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_batch_dev_never_prints_the_redis_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the private redis-server lives under ./instance
    said: list[str] = []
    server = ensure_redis(Settings(redis_url="redis://:s3cret@127.0.0.1:1/0"), said.append)
    assert server is not None
    server.stop()
    assert said[0].startswith("Redis at redis://:***@127.0.0.1:1/0 is not reachable")
    assert "s3cret" not in "\n".join(said)
