"""Beat's tick, one step at a time: batches of due entries sent once each, recorded, and an edit
or a delete that lands while a fire is being sent wins (real Redis, real broker, no beat)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from unittest.mock import patch

import pytest
from celery import Celery
from kombu import Connection

from batch.celery_app import close_celery, create_celery
from batch.core import Core
from batch.cron import IntervalSchedule
from batch.db import utcnow
from batch.entries import BatchEntry, delete_entry
from batch.firing import FIRE_BATCH, Firing
from batch.redis_broker import (
    EnvelopeTemplate,
    TaskMessage,
    envelope,
    push_task_messages,
    slot,
)

#: A queue no test worker consumes: the fires stay there to be counted and read.
QUEUE = "beat-test"


@pytest.fixture
def firing(core: Core, celery_app: Celery) -> Iterator[Firing]:
    schedule_key = celery_app.redbeat_conf.schedule_key
    for key in core.redis.zrange(schedule_key, 0, -1):
        core.redis.delete(key)
    core.redis.delete(schedule_key)
    with celery_app.connection_for_write() as connection:
        drain(celery_app, connection)
    yield Firing(celery_app, core.redis, BatchEntry.decode_definition)
    with celery_app.connection_for_write() as connection:
        drain(celery_app, connection)


def add_entry(celery: Celery, name: str, seconds: int, last_run_at: datetime) -> BatchEntry:
    entry = BatchEntry(
        name=name, task="batch.start_run", schedule=IntervalSchedule(seconds),
        kwargs={"job": "tests.sum", "params": {}, "trigger": f"schedule:{name}", "schedule": name},
        options={"queue": QUEUE}, enabled=True, last_run_at=last_run_at, app=celery,
    )  # fmt: skip
    return entry.save()


def drain(celery: Celery, connection: Connection) -> list[tuple[str, str, dict[str, Any]]]:
    """Every fire waiting in QUEUE: (schedule, scheduled_for, headers), removed from it."""
    queue = celery.amqp.queues[QUEUE](connection.default_channel)
    queue.declare()
    fires = []
    while (message := queue.get(no_ack=True)) is not None:
        _, kwargs, _ = message.decode()
        fires.append((kwargs["schedule"], kwargs["scheduled_for"], message.headers))
    return fires


def fire_all(firing: Firing, celery: Celery) -> list[int]:
    """Run steps until one finds fewer than a batch due; each step's count of due keys."""
    counts = []
    with celery.producer_or_acquire() as producer:
        while True:
            counts.append(firing.fire_due(producer))
            if counts[-1] < FIRE_BATCH:
                return counts


def test_a_burst_larger_than_a_batch_is_sent_once_each_and_recorded(
    core: Core, celery_app: Celery, firing: Firing
) -> None:
    last = utcnow().replace(microsecond=0) - timedelta(seconds=90)
    names = [f"burst-{i:04d}" for i in range(FIRE_BATCH * 2 + 200)]
    for name in names:
        add_entry(celery_app, name, 60, last)
    assert fire_all(firing, celery_app) == [FIRE_BATCH, FIRE_BATCH, 200]
    fire_at = last + timedelta(seconds=60)  # the newest fire due; none older is sent
    with celery_app.connection_for_write() as connection:
        fires = drain(celery_app, connection)
    assert sorted((name, when) for name, when, _ in fires) == [
        (name, fire_at.isoformat()) for name in names
    ]
    assert all("batch_sent_at" in headers for _, _, headers in fires)
    schedule_key = celery_app.redbeat_conf.schedule_key
    for name in (names[0], names[FIRE_BATCH], names[-1]):
        key = BatchEntry.generate_key(celery_app, name)
        assert BatchEntry.load_meta(key, app=celery_app)["last_run_at"] == fire_at
        assert core.redis.zscore(schedule_key, key) == (fire_at + timedelta(seconds=60)).timestamp()
    assert fire_all(firing, celery_app) == [0]
    # The sleep is read from the zset: until the earliest next fire (about 30 s away), at most
    # the loop interval.
    wait = (fire_at + timedelta(seconds=60)).timestamp() - utcnow().timestamp()
    assert firing.seconds_to_next(1.0) == 1.0
    assert wait - 1 < firing.seconds_to_next(60) <= wait


def during_send(firing: Firing, action: Callable[[], None]) -> None:
    """Make ``action`` happen after the due entries are read and before their fires are sent."""
    send = firing._send

    def send_after_action(*args: Any) -> Any:
        action()
        return send(*args)

    firing._send = send_after_action  # type: ignore[method-assign]


def test_an_edit_or_delete_that_lands_while_the_fire_is_sent_wins(
    core: Core, celery_app: Celery, firing: Firing
) -> None:
    last = utcnow().replace(microsecond=0) - timedelta(seconds=61)
    fire_at = last + timedelta(seconds=60)
    add_entry(celery_app, "edited", 60, last)
    add_entry(celery_app, "deleted", 60, last)

    def edit_and_delete() -> None:
        # As an edit writes through: a new definition, the meta kept (only set if absent).
        add_entry(celery_app, "edited", 3600, last)
        delete_entry(celery_app, "deleted")

    during_send(firing, edit_and_delete)
    assert fire_all(firing, celery_app) == [2]
    with celery_app.connection_for_write() as connection:
        fired = sorted(name for name, _, _ in drain(celery_app, connection))
    assert fired == ["deleted", "edited"]  # both were due when read, and sent
    schedule_key = celery_app.redbeat_conf.schedule_key
    deleted = BatchEntry.generate_key(celery_app, "deleted")
    assert not core.redis.exists(deleted)
    assert core.redis.zscore(schedule_key, deleted) is None
    # The edited entry keeps its fire as sent, and is scored by its new timing, not the old.
    edited = BatchEntry.generate_key(celery_app, "edited")
    assert BatchEntry.load_meta(edited, app=celery_app)["last_run_at"] == fire_at
    firing._send = Firing._send.__get__(firing)  # type: ignore[method-assign]
    assert fire_all(firing, celery_app) == [1]  # read again: not due by its new timing
    assert core.redis.zscore(schedule_key, edited) == (fire_at + timedelta(hours=1)).timestamp()
    with celery_app.connection_for_write() as connection:
        assert drain(celery_app, connection) == []


def test_a_fire_pushed_on_a_redis_broker_is_the_message_kombu_writes(
    core: Core, celery_app: Celery
) -> None:
    with celery_app.connection_for_write() as connection:
        if connection.transport.driver_type != "redis":
            pytest.skip("the broker is not Redis: fires go through kombu's publish")
        channel = connection.default_channel
        headers, properties, body, _ = celery_app.amqp.create_task_message(
            "a-task-id", "batch.start_run", (), {"schedule": "s", "scheduled_for": "t"},
            argsrepr="()", kwargsrepr="{schedule: 's'}",
        )  # fmt: skip
        message = TaskMessage(headers, properties, body, queue=QUEUE, priority=6)
        with connection.Producer() as producer:
            celery_app.amqp.send_task_message(
                producer, "batch.start_run", (dict(headers), dict(properties), body, None),
                queue=QUEUE, priority=6, declare=[], retry=False,
            )  # fmt: skip
        push_task_messages(channel, [message])
        key = channel._q_for_pri(QUEUE, channel.priority(6))
        pushed, published = (json.loads(raw) for raw in core.redis.lpop(key, 2))
        assert core.redis.llen(key) == 0
    for payload in (pushed, published):
        payload["properties"].pop("delivery_tag")
    assert pushed == published


def test_fires_reach_a_redis_broker_that_is_not_redbeats(core: Core, firing: Firing) -> None:
    # The broker on another database of the server: beat pushes, then records (two calls).
    base = core.settings.redis_url.rsplit("/", 1)[0]
    settings = dataclasses.replace(core.settings, broker_url=f"{base}/1")
    celery = create_celery(settings, core)
    try:
        if not celery.connection_for_write().transport.driver_type == "redis":
            pytest.skip("needs a Redis broker")
        other = Firing(celery, core.redis, BatchEntry.decode_definition)
        last = utcnow().replace(microsecond=0) - timedelta(seconds=61)
        for name in ("x", "y", "z"):
            add_entry(celery, name, 60, last)
        assert fire_all(other, celery) == [3]
        with celery.connection_for_write() as connection:
            fires = sorted(name for name, _, _ in drain(celery, connection))
        assert fires == ["x", "y", "z"]
        assert not core.redis.exists(QUEUE)  # nothing went to RedBeat's database
        key = BatchEntry.generate_key(celery, "x")
        assert BatchEntry.load_meta(key, app=celery)["last_run_at"] == last + timedelta(seconds=60)
    finally:
        close_celery(celery)


def test_an_edit_between_the_load_and_the_definition_fetch_keeps_the_entry(
    core: Core, celery_app: Celery, firing: Firing
) -> None:
    last = utcnow().replace(microsecond=0) - timedelta(seconds=61)
    add_entry(celery_app, "raced", 60, last)
    fetch = firing._fetch_definitions

    def edit_then_fetch(*args: Any) -> None:
        add_entry(celery_app, "raced", 30, last)  # loaded under one digest, fetched under another
        fetch(*args)

    firing._fetch_definitions = edit_then_fetch  # type: ignore[method-assign]
    assert fire_all(firing, celery_app) == [1]
    firing._fetch_definitions = fetch  # type: ignore[method-assign]
    key = BatchEntry.generate_key(celery_app, "raced")
    assert core.redis.zscore(celery_app.redbeat_conf.schedule_key, key) is not None
    # The next step reads it again and fires it once, by its new timing (every 30 s).
    assert fire_all(firing, celery_app) == [1]
    with celery_app.connection_for_write() as connection:
        fires = drain(celery_app, connection)
    assert [(name, when) for name, when, _ in fires] == [
        ("raced", (last + timedelta(seconds=60)).isoformat())
    ]


def test_a_stop_signal_during_a_step_is_handled_once_its_fires_are_recorded(
    core: Core, celery_app: Celery, firing: Firing
) -> None:
    last = utcnow().replace(microsecond=0) - timedelta(seconds=61)
    add_entry(celery_app, "stopped", 60, last)

    class Stopped(Exception):
        pass

    def stop(_signum: int, _frame: Any) -> None:
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop)  # as Celery beat's handler ends it
    try:
        during_send(firing, lambda: os.kill(os.getpid(), signal.SIGTERM))
        with pytest.raises(Stopped):
            fire_all(firing, celery_app)
    finally:
        signal.signal(signal.SIGTERM, previous)
    key = BatchEntry.generate_key(celery_app, "stopped")
    assert BatchEntry.load_meta(key, app=celery_app)["last_run_at"] == last + timedelta(seconds=60)
    with celery_app.connection_for_write() as connection:
        assert [name for name, _, _ in drain(celery_app, connection)] == ["stopped"]


def test_entries_due_soon_are_made_ready_ahead_and_fire_as_any_other(
    core: Core, celery_app: Celery, firing: Firing
) -> None:
    soon = utcnow().replace(microsecond=0) + timedelta(seconds=2)
    for name in ("ahead-1", "ahead-2"):
        add_entry(celery_app, name, 60, soon - timedelta(seconds=60))
    with celery_app.producer_or_acquire() as producer, patch("batch.firing.WARM_BATCH", 1):
        # One at a time here: each call goes past the ones already ready.
        assert [firing.warm_up(producer, 10.0) for _ in range(3)] == [1, 1, 0]
    ready = {key: digest for key, (digest, _) in firing._definitions.items()}
    while utcnow() < soon:
        time.sleep(0.05)
    assert fire_all(firing, celery_app) == [2]
    assert {key: digest for key, (digest, _) in firing._definitions.items()} == ready
    with celery_app.connection_for_write() as connection:
        fires = sorted((name, when) for name, when, _ in drain(celery_app, connection))
    assert fires == [("ahead-1", soon.isoformat()), ("ahead-2", soon.isoformat())]


def test_warm_up_reads_only_what_came_into_its_horizon_since_the_last_call(
    core: Core, celery_app: Celery, firing: Firing
) -> None:
    # A busy beat (100,000 schedules) warms a slice on many ticks: each slice must go on from
    # the last one, not read the whole horizon again. Fire times are whole seconds.
    base = utcnow().replace(microsecond=0) + timedelta(seconds=2)
    seconds = {"a": 0, "b": 0, "c": 1, "later": 4}
    due = {name: base + timedelta(seconds=after) for name, after in seconds.items()}
    for name, at in due.items():
        add_entry(celery_app, name, 60, at - timedelta(seconds=60))
    key = {name: BatchEntry.generate_key(celery_app, name) for name in due}
    reads: list[int] = []
    original = core.redis.zrangebyscore

    def counted(*args: Any, **kwargs: Any) -> Any:
        page = original(*args, **kwargs)
        reads.append(len(page))
        return page

    with (
        celery_app.producer_or_acquire() as producer,
        patch.object(core.redis, "zrangebyscore", counted),
    ):
        on_redis = producer.connection.transport.driver_type == "redis"
        # Within 3.5 s: a, b and c, not later.
        assert firing.warm_up(producer, 3.5, limit=2) == 2  # a and b
        assert firing.warm_up(producer, 3.5, limit=2) == 1  # c: past the two at its score
        assert firing.warm_up(producer, 3.5, limit=2) == 0
        assert reads == [2, 1, 0]  # nothing read twice
        while utcnow() < base + timedelta(seconds=0.6):  # later comes within 3.5 s
            time.sleep(0.05)
        assert firing.warm_up(producer, 3.5, limit=2) == 1
    assert set(firing._definitions) == set(key.values())
    if on_redis:  # each ready to fire as it is
        assert set(firing._templates) == set(key.values())
        # A new broker connection drops the templates: the next warm-up makes them again for
        # the entries still ahead.
        firing.forget_connection()
        with celery_app.producer_or_acquire() as producer:
            assert firing.warm_up(producer, 3.5) == 0  # nothing to decode: all known
        assert set(firing._templates) == {key["c"], key["later"]}


def test_a_filled_template_is_the_envelope_of_the_message_itself(celery_app: Celery) -> None:
    def message(task_id: str, sent_at: str, fire: str) -> TaskMessage:
        headers, properties, body, _ = celery_app.amqp.create_task_message(
            task_id, "batch.start_run", (), {"schedule": "s", "scheduled_for": fire},
            argsrepr="()", kwargsrepr="{schedule: 's'}",
        )  # fmt: skip
        headers = {**headers, "batch_sent_at": sent_at}
        return TaskMessage(headers, properties, body, queue=QUEUE, priority=3)

    with celery_app.connection_for_write() as connection:
        if connection.transport.driver_type != "redis":
            pytest.skip("templates are for a Redis broker")
        channel = connection.default_channel
        template = EnvelopeTemplate(channel, message(slot("id"), slot("sent_at"), slot("fire")))
        values = {"id": "t-1", "sent_at": "2026-12-01T00:00:00.5+00:00", "fire": "2026-12-01"}
        filled = json.loads(template.fill(values))
        key, payload = envelope(channel, message("t-1", values["sent_at"], values["fire"]))
    expected = json.loads(payload)
    assert template.queue_list == key
    for one in (filled, expected):
        one["properties"].pop("delivery_tag")
    assert filled == expected
