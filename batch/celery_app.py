"""The one function that builds the Celery app from settings."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue
from redbeat.schedulers import ensure_conf as ensure_redbeat_conf

from batch.capacity import CapacityAnnouncer
from batch.constants import REDBEAT_KEY_PREFIX
from batch.core import REDIS_TIMEOUT_SECONDS, Core
from batch.settings import Settings

MAX_PRIORITY = 9


def _queue(name: str) -> Queue:
    # The default exchange ("") routes by queue name with no binding to look up, so
    # routing survives a Redis FLUSHALL and works the same on RabbitMQ.
    return Queue(
        name,
        Exchange(""),
        routing_key=name,
        queue_arguments={"x-max-priority": MAX_PRIORITY},
    )


def _broker_transport_options(settings: Settings) -> dict[str, float]:
    options: dict[str, float] = {"visibility_timeout": 3600}
    if settings.effective_broker_url.startswith(("redis://", "rediss://", "unix://")):
        # A hung Redis broker fails a publish or a page's queue count instead of blocking it.
        options |= {
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        }
    return options


def create_celery(settings: Settings, core: Core | None = None) -> Celery:
    """A configured Celery app carrying the core as ``app.batch_core``; connects lazily."""
    app = Celery("batch", set_as_current=False)
    app.conf.update(
        broker_url=settings.effective_broker_url,
        result_backend=settings.redis_url,
        broker_connection_retry_on_startup=True,
        # JSON only: a pickled message could run code chosen by whoever can write to the broker.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        task_default_queue=settings.default_queue,
        # A worker started without --queues consumes every queue listed here: BATCH_QUEUES.
        task_queues=[_queue(name) for name in settings.queues],
        task_create_missing_queues=True,
        # One message per process at a time: long chunks must not wait behind a busy sibling.
        worker_prefetch_multiplier=1,
        task_track_started=False,
        result_expires=24 * 3600,
        result_chord_join_timeout=30,
        broker_transport_options=_broker_transport_options(settings),
        worker_hijack_root_logger=False,
        redbeat_redis_url=settings.redis_url,
        redbeat_key_prefix=REDBEAT_KEY_PREFIX,
        # RedBeat's own client: a hung Redis raises in beat's tick (which rides it out)
        # instead of blocking it for ever.
        redbeat_redis_options={
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        },
        # Beat ticks at least every second and a standby tries the lock as often, so that a
        # standby fires about 1 s after the lock timeout (docs/architecture.md).
        beat_max_loop_interval=1,
        redbeat_lock_timeout=settings.beat_lock_timeout_seconds,
        # Extra job modules load at worker start, with any Celery tasks they define.
        imports=list(settings.job_modules),
    )
    if settings.worker_concurrency:
        app.conf.worker_concurrency = settings.worker_concurrency
    ensure_redbeat_conf(app)
    app.batch_core = core or Core(settings)
    app.steps["worker"].add(CapacityAnnouncer)
    import batch.tasks  # noqa: F401  (registers the shared tasks with this app)
    from batch.alert_delivery import AlertDeliveryStep
    from batch.run_driver import RunDriverStep
    from batch.sweep import RecoverySweep  # imports the engine, which imports this module

    app.steps["worker"].add(RecoverySweep)
    app.steps["worker"].add(AlertDeliveryStep)
    app.steps["worker"].add(RunDriverStep)

    return app


def close_celery(app: Celery) -> None:
    """Close the connections a client-side app opened (results, RedBeat, the core)."""
    backend = app._backend  # only the one already created, if any
    consumer = getattr(backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
    redbeat_client = getattr(app, "redbeat_redis", None)
    if redbeat_client is not None:
        redbeat_client.close()
        app.redbeat_redis = None
    app.batch_core.dispose()
    app.close()


def message_priority(app: Celery, priority: int) -> int:
    """A schedule's priority (0-9, 9 most urgent) as this app's broker orders messages.

    RabbitMQ serves higher numbers first; kombu's Redis transport serves lower ones first.
    """
    if app.connection_for_write().transport.driver_type == "redis":
        return MAX_PRIORITY - priority
    return priority
