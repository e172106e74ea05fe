"""How beat fires what is due: a batch of entries per step, a few Redis round trips per batch.

RedBeat's own tick loads each due entry with its own round trip, decodes every definition on
every tick, sends each fire with Celery's full ``send_task`` path, and sleeps for a time it
computed before firing. Here one step is:

1. ``ZRANGEBYSCORE`` for up to ``FIRE_BATCH`` due keys;
2. one pipelined ``HMGET`` of their definitions and metas (a definition is decoded once, then
   kept while its JSON is unchanged);
3. the fires sent in one kombu publish batch (a Redis pipeline on a Redis broker);
4. one Lua call that records each fire (meta and next score), only for entries whose
   definition is still the one fired: an edit or a delete that landed meanwhile wins.

A fire is sent before it is recorded. If beat dies between the two, the next beat sends the
same fire time again, and the run for it is created once: runs are unique per (schedule, fire
time). The sleep is read from the zset after firing, so it is never longer than the wait for
the earliest entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery
from kombu import Producer
from kombu.utils.uuid import uuid
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redis import Redis

from batch.constants import SENT_AT_HEADER
from batch.cron import FireTimes
from batch.db import utcnow

log = logging.getLogger(__name__)

#: Most due entries loaded, sent and recorded in one step.
FIRE_BATCH = 500
#: The shortest sleep between ticks: fires due within it go out together in the next tick.
MIN_SLEEP_SECONDS = 0.005
#: Decoded definitions kept (one per schedule); past this the cache starts again.
MAX_CACHED_DEFINITIONS = 500_000
#: Fires named in a step's log line; the rest are counted.
LOGGED_FIRES = 20

# KEYS[1]: the schedule zset. ARGV: (key, definition digest, meta, next score) per fire.
# A fire is recorded only if its entry still has the definition it was fired from: a deleted
# entry stays deleted, and an edited one is scored now, to be re-read with its new timing.
RECORD_FIRES = """
local recorded = 0
for i = 1, #ARGV, 4 do
    local key = ARGV[i]
    local definition = redis.call('HGET', key, 'definition')
    if definition then
        redis.call('HSET', key, 'meta', ARGV[i + 2])
        if redis.sha1hex(definition) == ARGV[i + 1] then
            redis.call('ZADD', KEYS[1], ARGV[i + 3], key)
            recorded = recorded + 1
        else
            redis.call('ZADD', KEYS[1], 0, key)
        end
    end
end
return recorded
"""


@dataclass(frozen=True)
class Fire:
    """One due entry: what to send, and how to record it once sent."""

    key: str
    digest: str
    definition: dict[str, Any]
    fire_at: datetime
    next_at: datetime
    run_count: int


class Firing:
    """Fires the due RedBeat entries of one beat, batch by batch."""

    def __init__(self, app: Celery, client: Redis, decode: Callable[[str], dict[str, Any]]) -> None:
        self.app = app
        self.client = client
        self.schedule_key: str = app.redbeat_conf.schedule_key
        self._decode_definition = decode
        self._record = client.register_script(RECORD_FIRES)
        self._definitions: dict[str, tuple[str, dict[str, Any]]] = {}
        #: Queues declared on the current broker connection (RabbitMQ drops a message sent
        #: to a queue that does not exist yet).
        self._declared: set[str] = set()

    def forget_connection(self) -> None:
        """The broker connection was replaced: declare the queues again on the new one."""
        self._declared.clear()

    def fire_due(self, producer: Producer) -> int:
        """Send and record up to ``FIRE_BATCH`` due fires; how many keys were due."""
        now = utcnow()
        keys = self.client.zrangebyscore(self.schedule_key, 0, now.timestamp(), 0, FIRE_BATCH)
        if not keys:
            return 0
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "definition", "meta")
            stored = pipe.execute()
        fires: list[Fire] = []
        rescored: dict[str, float] = {}
        for key, (definition, meta) in zip(keys, stored, strict=True):
            fire = self._due(key, definition, meta, now)
            if isinstance(fire, Fire):
                fires.append(fire)
            else:
                rescored[key] = fire
        if fires:
            self._send(producer, fires)
            self._record(keys=[self.schedule_key], args=_record_args(fires))
            log.info("beat: sent %d fire(s): %s", len(fires), _named(fires))
        if rescored:
            self._rescore(rescored)
        return len(keys)

    def seconds_to_next(self, max_interval: float) -> float:
        """How long to sleep: until the earliest entry is due, at most ``max_interval``."""
        earliest = self.client.zrangebyscore(self.schedule_key, 0, "+inf", 0, 1, withscores=True)
        if not earliest:
            return max_interval
        wait = earliest[0][1] - time.time()
        return min(max(wait, MIN_SLEEP_SECONDS), max_interval)

    def _due(self, key: str, definition: str | None, meta: str | None, now: datetime) -> Any:
        """The Fire of a due entry; else the score it should have (-1: none, drop it)."""
        if not definition:
            return -1.0  # deleted since the zset was read
        decoded = self._decode(key, definition)
        schedule = decoded.get("schedule")
        if not isinstance(schedule, FireTimes) or not decoded.get("enabled", True):
            log.warning("beat: %s is not a batch schedule; reconcile removes it", key)
            return -1.0
        meta_values = json.loads(meta, cls=RedBeatJSONDecoder) if meta else {}
        last = meta_values.get("last_run_at")
        if last is not None and (next_at := schedule.next_after(last)) > now:
            return next_at.timestamp()  # its score was stale: not due yet
        fire_at = schedule.latest_due(last, now)
        return Fire(
            key=key,
            digest=hashlib.sha1(definition.encode()).hexdigest(),
            definition=decoded,
            fire_at=fire_at,
            next_at=schedule.next_after(fire_at),
            run_count=int(meta_values.get("total_run_count") or 0) + 1,
        )

    def _decode(self, key: str, definition: str) -> dict[str, Any]:
        cached = self._definitions.get(key)
        if cached is not None and cached[0] == definition:
            return cached[1]
        decoded = self._decode_definition(definition)
        if len(self._definitions) >= MAX_CACHED_DEFINITIONS:
            self._definitions.clear()
        self._definitions[key] = (definition, decoded)
        return decoded

    def _send(self, producer: Producer, fires: list[Fire]) -> None:
        amqp = self.app.amqp
        sent_at = {SENT_AT_HEADER: utcnow().isoformat(), "celery_beat_task": True}
        with producer.batch(max_size=2 * FIRE_BATCH):
            for fire in fires:
                definition = fire.definition
                kwargs = {**definition["kwargs"], "scheduled_for": fire.fire_at.isoformat()}
                options = definition.get("options") or {}
                self._declare(producer, options.get("queue"))
                message = amqp.create_task_message(
                    uuid(), definition["task"], (), kwargs,
                    # What the worker's log shows for it; Celery's saferepr of the kwargs costs
                    # more than the rest of the send.
                    argsrepr="()", kwargsrepr=f"{{schedule: {definition.get('name')!r}}}",
                )  # fmt: skip
                amqp.send_task_message(
                    producer, definition["task"], message,
                    queue=options.get("queue"), priority=options.get("priority"),
                    headers=dict(sent_at), declare=[], retry=False,
                )  # fmt: skip

    def _declare(self, producer: Producer, queue: str | None) -> None:
        if queue not in self._declared:
            producer.maybe_declare(self.app.amqp.queues[queue or self.app.amqp.default_queue.name])
            self._declared.add(queue)

    def _rescore(self, scores: dict[str, float]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for key, score in scores.items():
                if score < 0:
                    pipe.zrem(self.schedule_key, key)
                else:
                    pipe.zadd(self.schedule_key, {key: score}, xx=True)
            pipe.execute()


def _record_args(fires: list[Fire]) -> list[Any]:
    args: list[Any] = []
    for fire in fires:
        meta = {"last_run_at": fire.fire_at, "total_run_count": fire.run_count}
        meta_json = json.dumps(meta, cls=RedBeatJSONEncoder)
        args += [fire.key, fire.digest, meta_json, fire.next_at.timestamp()]
    return args


def _named(fires: list[Fire]) -> str:
    named = ", ".join(
        f"{fire.definition.get('name')} @ {fire.fire_at.isoformat()}"
        for fire in fires[:LOGGED_FIRES]
    )
    more = len(fires) - LOGGED_FIRES
    return f"{named} and {more} more" if more > 0 else named
