"""How beat fires what is due: a batch of entries per step, two Redis calls per step.

RedBeat's own tick loads each due entry with its own round trip, decodes every definition on
every tick, sends each fire with Celery's full ``send_task`` path, and sleeps for a time it
computed before firing. Here one step is:

1. one Lua call (``LOAD_DUE``) for up to ``FIRE_BATCH`` due keys, each with the SHA-1 of its
   definition and its meta (a definition is fetched and decoded only when new or changed);
2. each fire's message built, and on a Redis broker its envelope written as kombu's Redis
   transport writes it (``redis_broker.envelope``);
3. one Lua call (``SEND_AND_RECORD``) that pushes the messages, when the broker is this same
   Redis, and records each fire (meta and next score) in one atomic step, and returns the
   earliest score to sleep until. On another Redis broker the messages are pushed in one
   pipeline just before; on RabbitMQ they go out in one kombu publish batch.

A fire is recorded only if its entry still has the definition it was fired from: an edit or a
delete that landed meanwhile wins. Where the send is not atomic with the record, a fire is sent
before it is recorded: if beat dies between the two, the next beat sends the same fire time
again, and the run for it is created once (runs are unique per schedule and fire time).
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery
from celery.utils.nodenames import anon_nodename
from kombu import Producer
from kombu.utils.uuid import uuid
from redis import Redis

from batch.constants import SENT_AT_HEADER
from batch.cron import FireTimes
from batch.db import utcnow
from batch.entries import decode_redbeat_json, encode_redbeat_json
from batch.exceptions import UserError
from batch.redis_broker import EnvelopeTemplate, TaskMessage, push_envelopes, slot

log = logging.getLogger(__name__)

#: Most due entries loaded, sent and recorded in one step.
FIRE_BATCH = 500
#: The shortest sleep between ticks: fires due within it go out together in the next tick.
MIN_SLEEP_SECONDS = 0.01
#: Decoded definitions kept (one per schedule); past this the caches start again.
MAX_CACHED_DEFINITIONS = 500_000
#: Most entries one warm-up decodes ahead of time.
WARM_BATCH = 2_000
#: Signals that stop beat on purpose: held while a step sends and records its fires.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Fires named in a step's log line; the rest are counted.
LOGGED_FIRES = 20

# KEYS[1]: the schedule zset. ARGV[1]: now (a score), ARGV[2]: the most keys to load.
# Returns the earliest score (when nothing is due, the time to sleep until), then (key, SHA-1 of
# its definition or false, meta or false) per due key: beat keeps the definitions it decoded by
# digest and fetches only the ones it does not have.
LOAD_DUE = """
local earliest = redis.call('ZRANGEBYSCORE', KEYS[1], 0, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local loaded = {earliest[2] or false}
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, ARGV[2])
for _, key in ipairs(keys) do
    local stored = redis.call('HMGET', key, 'definition', 'meta')
    loaded[#loaded + 1] = key
    loaded[#loaded + 1] = stored[1] and redis.sha1hex(stored[1])
    loaded[#loaded + 1] = stored[2]
end
return loaded
"""

# KEYS[1]: the schedule zset. ARGV: (key, definition digest, meta, next score, queue list,
# message) per fire. On a broker that is this same Redis, the fire's message is pushed here in
# the same atomic call that records it (its list and message are empty otherwise: beat sent it
# already). A fire is recorded only if its entry still has the definition it was fired from: a
# deleted entry stays deleted, and an edited one is scored now, to be read again with its new
# timing. Returns the earliest score once recorded: the time to sleep until.
SEND_AND_RECORD = """
for i = 1, #ARGV, 6 do
    if ARGV[i + 4] ~= '' then
        redis.call('LPUSH', ARGV[i + 4], ARGV[i + 5])
    end
end
for i = 1, #ARGV, 6 do
    local key = ARGV[i]
    local definition = redis.call('HGET', key, 'definition')
    if definition then
        redis.call('HSET', key, 'meta', ARGV[i + 2])
        if redis.sha1hex(definition) == ARGV[i + 1] then
            redis.call('ZADD', KEYS[1], ARGV[i + 3], key)
        else
            redis.call('ZADD', KEYS[1], 0, key)
        end
    end
end
local earliest = redis.call('ZRANGEBYSCORE', KEYS[1], 0, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return earliest[2] or false
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
        self._load_due = client.register_script(LOAD_DUE)
        self._send_and_record = client.register_script(SEND_AND_RECORD)
        #: key -> (digest, decoded definition), and key -> (meta JSON, its values) as recorded.
        self._definitions: dict[str, tuple[str, dict[str, Any]]] = {}
        self._metas: dict[str, tuple[str, dict[str, Any]]] = {}
        #: key -> (digest, its start message's envelope template), on a Redis broker.
        self._templates: dict[str, tuple[str, EnvelopeTemplate]] = {}
        #: Whether the broker is a Redis, and this one (pushes go with the records then).
        self._broker_is_this_redis: bool | None = None
        #: How far ahead warm_up has looked: a score, and the keys seen at that score.
        self._warm_cursor: tuple[float, int] = (0.0, 0)
        #: The earliest score the last step read, when nothing changed it since.
        self._earliest: float | None = None
        #: Queues declared on the current broker connection (RabbitMQ drops a message sent
        #: to a queue that does not exist yet).
        self._declared: set[str] = set()
        self._stop_signals = StopSignals()
        #: The sender's name in each message (Celery computes it per message otherwise).
        self._origin = anon_nodename()

    def forget_connection(self) -> None:
        """The broker connection was replaced: declare the queues again on the new one."""
        self._declared.clear()
        self._broker_is_this_redis = None
        self._templates.clear()
        self._warm_cursor = (0.0, 0)  # make the templates again ahead

    def fire_due(self, producer: Producer) -> int:
        """Send and record up to ``FIRE_BATCH`` due fires; how many keys were due."""
        now = utcnow()
        earliest, *loaded = self._load_due(
            keys=[self.schedule_key], args=[now.timestamp(), FIRE_BATCH]
        )
        self._earliest = _score(earliest)
        if not loaded:
            return 0
        due = list(zip(loaded[0::3], loaded[1::3], loaded[2::3], strict=True))
        self._fetch_definitions([(key, digest) for key, digest, _ in due])
        fires: list[Fire] = []
        rescored: dict[str, float] = {}
        for key, digest, meta in due:
            fire = self._due(key, digest, meta, now)
            if isinstance(fire, Fire):
                fires.append(fire)
            else:
                rescored[key] = fire
        self._earliest = None  # it has moved: read again below, or at the next sleep
        if fires:
            # A beat told to stop (SIGTERM, Ctrl-C) stops after recording what it sent: a fire
            # is sent twice only if beat dies between the two (kill -9, a crash).
            with self._stop_signals.held():
                earliest = self._send_and_record(
                    keys=[self.schedule_key],
                    args=self._record_args(fires, self._send(producer, fires)),
                )
            log.info("beat: sent %d fire(s): %s", len(fires), _named(fires))
            self._earliest = _score(earliest)
        if rescored:
            self._rescore(rescored)
            self._earliest = None
        return len(due)

    def seconds_to_next(self, max_interval: float) -> float:
        """How long to sleep: until the earliest entry is due, at most ``max_interval``.

        The last step's Lua calls read the earliest score already; else it is read here.
        """
        earliest, self._earliest = self._earliest, None
        if earliest is None:
            first = self.client.zrangebyscore(self.schedule_key, 0, "+inf", 0, 1, withscores=True)
            earliest = first[0][1] if first else None
        if earliest is None:
            return max_interval
        return min(max(earliest - time.time(), MIN_SLEEP_SECONDS), max_interval)

    def _due(self, key: str, digest: str | None, meta: str | None, now: datetime) -> Any:
        """The Fire of a due entry; else the score it should have (-1: none, drop it)."""
        cached = self._definitions.get(key)
        if not digest or cached is None:
            return -1.0  # deleted since it was loaded, or not a definition beat can read
        if cached[0] != digest:
            return 0.0  # edited since it was loaded: read again at the next tick
        definition = cached[1]
        schedule = definition["schedule"]
        values = self._meta_values(key, meta)
        last = values.get("last_run_at")
        if last is not None and (next_at := schedule.next_after(last)) > now:
            return next_at.timestamp()  # its score was stale: not due yet
        fire_at = schedule.latest_due(last, now)
        return Fire(
            key=key,
            digest=digest,
            definition=definition,
            fire_at=fire_at,
            next_at=schedule.next_after(fire_at),
            run_count=int(values.get("total_run_count") or 0) + 1,
        )

    def warm_up(self, producer: Producer, horizon: float, limit: int | None = None) -> int:
        """Decode, ahead of time, up to ``limit`` (``WARM_BATCH``) entries due within
        ``horizon`` seconds that beat has not seen yet (a beat just started, a burst at the
        top of the hour, 100,000 schedules meeting beat in their first minute); how many.

        Their definitions, metas and, on a Redis broker, message templates are then ready
        when they fall due: a cold burst of 10,000 costs as much as a warm one. A cursor
        (score, and keys seen at that score) remembers how far ahead beat has looked, so
        each call reads only the entries that came into the horizon since; one that moves
        behind the cursor (an edit, a new schedule) is read when it falls due.
        """
        limit = limit or WARM_BATCH
        now = time.time()
        end = now + horizon
        score, seen = self._warm_cursor
        if score < now:
            score, seen = now, 0
        if score > end:
            return 0
        page = self.client.zrangebyscore(
            self.schedule_key, score, end, seen, limit, withscores=True
        )
        if len(page) < limit:
            self._warm_cursor = (end, 0)  # everything up to the horizon is seen
        else:
            last = page[-1][1]
            at_last = sum(1 for _, key_score in page if key_score == last)
            self._warm_cursor = (last, at_last + (seen if last == score else 0))
        cold = [key for key, _ in page if key not in self._definitions]
        if cold:
            with self.client.pipeline(transaction=False) as pipe:
                for key in cold:
                    pipe.hmget(key, "definition", "meta")
                stored = pipe.execute()
            for key, (definition, meta) in zip(cold, stored, strict=True):
                if self._remember(key, definition) is not None and meta:
                    self._metas[key] = (meta, self._meta_values(key, meta))
        if producer.connection.transport.driver_type == "redis":
            for key, _ in page:  # templates too (a new broker connection drops them)
                known = self._definitions.get(key)
                if known is not None and key not in self._templates:
                    self._template(producer.channel, key, known[0])
        return len(cold)

    def _fetch_definitions(self, due: list[tuple[str, str | None]]) -> None:
        """Decode the definitions of ``due`` not yet decoded (new or changed since)."""
        missing = [
            key for key, digest in due if digest and self._definitions.get(key, ("",))[0] != digest
        ]
        if not missing:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for key in missing:
                pipe.hget(key, "definition")
            definitions = pipe.execute()
        for key, definition in zip(missing, definitions, strict=True):
            self._remember(key, definition)

    def _remember(self, key: str, definition: str | None) -> str | None:
        """Decode and keep an entry's definition; its digest, or None if beat cannot use it."""
        if definition is None:
            return None  # deleted meanwhile
        try:
            decoded = self._decode_definition(definition)
        except (ValueError, KeyError, TypeError, UserError) as exc:
            log.warning("beat: %s has a definition beat cannot read (%s); dropped", key, exc)
            return None
        if not isinstance(decoded.get("schedule"), FireTimes) or not decoded.get("enabled"):
            log.warning("beat: %s is not a batch schedule; dropped", key)
            return None
        if len(self._definitions) >= MAX_CACHED_DEFINITIONS:
            for cache in (self._definitions, self._metas, self._templates):
                cache.clear()
            self._warm_cursor = (0.0, 0)
        digest = hashlib.sha1(definition.encode()).hexdigest()
        self._definitions[key] = (digest, decoded)
        return digest

    def _meta_values(self, key: str, meta: str | None) -> dict[str, Any]:
        if not meta:
            return {}
        cached = self._metas.get(key)
        if cached is not None and cached[0] == meta:
            return cached[1]
        values: dict[str, Any] = decode_redbeat_json(meta)
        return values

    def _record_args(self, fires: list[Fire], pushes: list[tuple[str, str]]) -> list[Any]:
        """The script's arguments; each meta kept, so the next fire need not decode it."""
        args: list[Any] = []
        for fire, (queue_list, message) in zip(fires, pushes, strict=True):
            values = {"last_run_at": fire.fire_at, "total_run_count": fire.run_count}
            meta = encode_redbeat_json(values)
            self._metas[fire.key] = (meta, values)
            args += [fire.key, fire.digest, meta, fire.next_at.timestamp(), queue_list, message]
        return args

    def _send(self, producer: Producer, fires: list[Fire]) -> list[tuple[str, str]]:
        """Send the fires, or leave them to the record script: (queue list, message) each."""
        sent_at = utcnow().isoformat()
        unsent = ("", "")
        if producer.connection.transport.driver_type == "redis":
            pushes = [self._envelope(producer.channel, fire, sent_at) for fire in fires]
            if self._is_this_redis(producer.channel.client):
                return pushes  # pushed by the script that records them, atomically
            push_envelopes(producer.channel, pushes)
            return [unsent] * len(fires)
        with producer.batch(max_size=2 * FIRE_BATCH):
            for fire in fires:
                message = self._message(fire.definition, uuid(), sent_at, fire.fire_at.isoformat())
                self._declare(producer, message.queue)
                self.app.amqp.send_task_message(
                    producer, message.headers["task"],
                    (message.headers, message.properties, message.body, None),
                    queue=message.queue, priority=message.priority, declare=[], retry=False,
                )  # fmt: skip
        return [unsent] * len(fires)

    def _envelope(self, channel: Any, fire: Fire, sent_at: str) -> tuple[str, str]:
        """The fire's message as kombu's Redis transport writes it, from its schedule's template."""
        template = self._template(channel, fire.key, fire.digest)
        values = {"id": uuid(), "sent_at": sent_at, "fire": fire.fire_at.isoformat()}
        return template.queue_list, template.fill(values)

    def _template(self, channel: Any, key: str, digest: str) -> EnvelopeTemplate:
        cached = self._templates.get(key)
        if cached is None or cached[0] != digest:
            definition = self._definitions[key][1]
            message = self._message(definition, slot("id"), slot("sent_at"), slot("fire"))
            cached = (digest, EnvelopeTemplate(channel, message))
            self._templates[key] = cached
        return cached[1]

    def _is_this_redis(self, broker: Redis) -> bool:
        """Whether the broker's Redis is RedBeat's (same server and database)."""
        if self._broker_is_this_redis is None:
            self._broker_is_this_redis = _address(broker) == _address(self.client)
        return self._broker_is_this_redis

    def _message(
        self, definition: dict[str, Any], task_id: str, sent_at: str, fire_at: str
    ) -> TaskMessage:
        options = definition.get("options") or {}
        kwargs = {**definition["kwargs"], "scheduled_for": fire_at}
        headers, properties, body, _ = self.app.amqp.create_task_message(
            task_id, definition["task"], (), kwargs,
            # What the worker's log shows for it; Celery's saferepr of the kwargs costs more
            # than the rest of the send.
            argsrepr="()", kwargsrepr=f"{{schedule: {definition.get('name')!r}}}",
            origin=self._origin,
        )  # fmt: skip
        return TaskMessage(
            headers={**headers, SENT_AT_HEADER: sent_at, "celery_beat_task": True},
            properties=properties,
            body=body,
            queue=options.get("queue") or self.app.amqp.default_queue.name,
            priority=options.get("priority") or 0,
        )

    def _declare(self, producer: Producer, queue: str) -> None:
        if queue not in self._declared:
            producer.maybe_declare(self.app.amqp.queues[queue])
            self._declared.add(queue)

    def _rescore(self, scores: dict[str, float]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for key, score in scores.items():
                if score < 0:
                    pipe.zrem(self.schedule_key, key)
                else:
                    pipe.zadd(self.schedule_key, {key: score}, xx=True)
            pipe.execute()


class StopSignals:
    """SIGTERM and SIGINT held while a step sends and records its fires, then handled.

    The handlers already installed (Celery beat's) are wrapped once, so that holding costs
    a flag per step rather than four ``signal.signal`` calls.
    """

    def __init__(self) -> None:
        self._handlers: dict[int, Any] = {}
        self._holding = False
        self._received: list[int] = []

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the stop signals for the block (in the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        if not self._handlers:
            for signum in STOP_SIGNALS:
                self._handlers[signum] = signal.signal(signum, self._on_signal)
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            received, self._received = self._received, []
            for signum in received:
                self._handle(signum, None)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._holding:
            self._received.append(signum)
        else:
            self._handle(signum, frame)

    def _handle(self, signum: int, frame: Any) -> None:
        handler = self._handlers[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)  # the default action: end the process
            signal.raise_signal(signum)


def _address(client: Redis) -> tuple[Any, ...]:
    kwargs = client.connection_pool.connection_kwargs
    return tuple(kwargs.get(name) for name in ("host", "port", "path", "db"))


def _score(value: Any) -> float | None:
    return None if value is None else float(value)


def _named(fires: list[Fire]) -> str:
    named = ", ".join(
        f"{fire.definition.get('name')} @ {fire.fire_at.isoformat()}"
        for fire in fires[:LOGGED_FIRES]
    )
    more = len(fires) - LOGGED_FIRES
    return f"{named} and {more} more" if more > 0 else named
