"""The scheduler's health, as beat reports it in Redis: who is active, when it last ticked
and reconciled. The overview shows it; the watchdog alerts when the ticks stop."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

import redis

from batch.constants import BEAT_HEALTH_KEY

TICKED, RECONCILED, FULLY_RECONCILED = "ticked_at", "reconciled_at", "full_reconciled_at"


@dataclass(frozen=True)
class BeatHealth:
    """What the active beat last reported; None where it has not (or Redis lost it)."""

    host: str | None
    ticked_at: datetime | None
    reconciled_at: datetime | None
    full_reconciled_at: datetime | None


def beat_name() -> str:
    """How this beat process is named in the report: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record(client: redis.Redis, moment: str, at: datetime) -> None:
    """Note that ``moment`` (TICKED, RECONCILED, ...) happened at ``at``; a tick also names
    this process as the active beat (any beat reconciles, only the active one ticks)."""
    values = {moment: at.isoformat()} | ({"host": beat_name()} if moment == TICKED else {})
    client.hset(BEAT_HEALTH_KEY, mapping=values)


def read(client: redis.Redis) -> BeatHealth:
    """The last report of the active beat."""
    values = client.hgetall(BEAT_HEALTH_KEY)
    text = {_text(key): _text(value) for key, value in values.items()}

    def moment(name: str) -> datetime | None:
        return datetime.fromisoformat(text[name]) if name in text else None

    return BeatHealth(
        host=text.get("host"),
        ticked_at=moment(TICKED),
        reconciled_at=moment(RECONCILED),
        full_reconciled_at=moment(FULLY_RECONCILED),
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
