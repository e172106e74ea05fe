"""What a Redis broker holds, read and written the way kombu's Redis transport stores it.

kombu keeps a queue as one Redis list per priority step, pushing on the left and taking from
the right. A message a worker took and has not acknowledged waits in the ``unacked`` hash
(delivery tag -> ``[message, exchange, routing key]``), the time it was taken in the
``unacked_index`` sorted set; kombu puts it back in its queue only after the visibility
timeout (an hour). The recovery sweep reads both to find what a lost worker node held.

Beat pushes its fires the same way kombu would (``push_task_messages``): kombu's publish path
costs about 150 us a message on the development machine, most of it generic (retries,
declarations, signals), which made a burst of 10,000 fires take seconds.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from kombu.serialization import dumps as serialize
from kombu.transport.redis import Channel
from kombu.utils.uuid import uuid

from batch import queries
from batch.constants import SENT_AT_HEADER

#: kombu's names for the hash of taken messages and its index (Channel.unacked_key and
#: Channel.unacked_index_key; batch sets no transport option that changes them).
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
#: Taken messages read per call, oldest first.
MAX_TAKEN = 10_000
#: kombu's delivery mode for a persistent message (Celery's default).
PERSISTENT = 2


@dataclass(frozen=True)
class TaskMessage:
    """A Celery task message to push: what ``app.amqp.create_task_message`` built, and where."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: Any
    queue: str
    priority: int


def push_task_messages(channel: Channel, messages: Iterable[TaskMessage]) -> None:
    """Push the messages on the broker in one pipeline, as kombu's publish would."""
    push_envelopes(channel, [envelope(channel, message) for message in messages])


def push_envelopes(channel: Channel, envelopes: Iterable[tuple[str, str]]) -> None:
    """Push (queue list, message JSON) pairs, as ``envelope`` makes them, in one pipeline."""
    with channel.client.pipeline(transaction=False) as pipe:
        for key, payload in envelopes:
            pipe.lpush(key, payload)
        pipe.execute()


def envelope(channel: Channel, message: TaskMessage) -> tuple[str, str]:
    """The list a message goes to and its JSON, as kombu's Redis transport writes them."""
    content_type, content_encoding, body = serialize(message.body, serializer="json")
    return _envelope(channel, message, base64.b64encode(body.encode()).decode(), uuid())


def _envelope(channel: Channel, message: TaskMessage, body: str, tag: str) -> tuple[str, str]:
    payload = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.headers,
        "properties": {
            **message.properties,
            "delivery_mode": PERSISTENT,
            "delivery_info": {"exchange": "", "routing_key": message.queue},
            "priority": message.priority,
            "body_encoding": "base64",
            "delivery_tag": tag,
        },
    }
    key = channel._q_for_pri(message.queue, channel.priority(message.priority))
    return key, json.dumps(payload)


class EnvelopeTemplate:
    """One message's envelope with slots, filled per send at the cost of a string join.

    Beat sends the same start message for a schedule on every fire, but for its task id, its
    delivery tag, its send time and its fire time. Built from a message holding ``slot(name)``
    strings in those places (``envelope`` writes it once), a fill costs a few microseconds
    against about 100 for building and encoding the message again.
    """

    def __init__(self, channel: Channel, message: TaskMessage) -> None:
        _, _, body = serialize(message.body, serializer="json")
        self._body = _Slotted(body)
        self.queue_list, payload = _envelope(channel, message, slot("body"), slot("tag"))
        self._payload = _Slotted(payload)

    def fill(self, values: dict[str, str]) -> str:
        """The envelope JSON with each slot's value (JSON-safe text: ids, ISO times)."""
        body = self._body.fill(values).encode()
        tag = uuid()
        return self._payload.fill({**values, "body": base64.b64encode(body).decode(), "tag": tag})


def slot(name: str) -> str:
    """The placeholder ``EnvelopeTemplate`` fills with the value named ``name``."""
    return f"\x00{name}\x00"


class _Slotted:
    """Text split at its slots: literal, slot name, literal, ..."""

    def __init__(self, text: str) -> None:
        # json.dumps writes the NUL of a slot as the escape \u0000.
        self._parts = re.split(r"\\u0000(\w+)\\u0000", text)

    def fill(self, values: dict[str, str]) -> str:
        parts = self._parts[:]
        parts[1::2] = [values[name] for name in parts[1::2]]
        return "".join(parts)


@dataclass(frozen=True)
class TakenMessage:
    """A task message a worker took from its queue and has not acknowledged."""

    task: str
    kwargs: dict[str, Any]
    queue: str
    priority: int | None
    taken_at: datetime
    #: When a retry's countdown ends: a worker holds such a message, unstarted, until then.
    eta: datetime | None


def oldest_waiting(client: redis.Redis, queue: str) -> datetime | None:
    """When the oldest message waiting in ``queue`` was sent; None when the queue is empty or
    a message at the head of one of its lists does not say (one sent by another program)."""
    with client.pipeline(transaction=False) as pipe:
        for key in queries.priority_lists(queue):
            pipe.lindex(key, -1)  # kombu pushes on the left and takes from the right
        heads = pipe.execute()
    sent: list[datetime] = []
    for raw in filter(None, heads):
        try:
            sent.append(datetime.fromisoformat(json.loads(raw)["headers"][SENT_AT_HEADER]))
        except (ValueError, KeyError, TypeError):
            return None
    return min(sent) if sent else None


def taken_before(client: redis.Redis, before: datetime, *, task: str) -> list[TakenMessage]:
    """Messages of ``task`` taken by a worker before ``before`` and not acknowledged yet."""
    tags = client.zrangebyscore(
        UNACKED_INDEX_KEY, "-inf", before.timestamp(), start=0, num=MAX_TAKEN, withscores=True
    )
    if not tags:
        return []
    raws = client.hmget(UNACKED_KEY, [tag for tag, _ in tags])
    taken = []
    for (_tag, score), raw in zip(tags, raws, strict=True):
        message = _read(raw, score) if raw else None  # None: acknowledged meanwhile
        if message is not None and message.task == task:
            taken.append(message)
    return taken


def _read(raw: str, taken_at: float) -> TakenMessage | None:
    """A Celery task message (protocol 2, JSON) as kombu stored it; None for anything else."""
    try:
        payload, _exchange, routing_key = json.loads(raw)
        headers, properties = payload["headers"], payload["properties"]
        body = payload["body"]
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _args, kwargs, _embed = json.loads(body)
        eta = datetime.fromisoformat(headers["eta"]) if headers.get("eta") else None
        if eta is not None and eta.tzinfo is None:
            eta = eta.replace(tzinfo=UTC)  # Celery writes its etas in UTC
        return TakenMessage(
            task=headers["task"],
            kwargs=dict(kwargs),
            queue=routing_key,
            priority=properties.get("priority"),
            taken_at=datetime.fromtimestamp(taken_at, UTC),
            eta=eta,
        )
    except (ValueError, KeyError, TypeError):
        return None
