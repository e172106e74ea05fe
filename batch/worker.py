"""Entry point for ``celery -A batch.worker``: the app built from the environment."""

from celery.signals import beat_init, worker_init, worker_process_init

from batch.celery_app import create_celery
from batch.settings import Settings

app = create_celery(Settings.from_env())


@worker_init.connect
@beat_init.connect
def _load_jobs(**_kwargs: object) -> None:
    # A wrongly declared job (duplicate name, unknown queue) is logged at start,
    # not at the first run.
    app.batch_core.jobs  # noqa: B018


@worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs: object) -> None:
    # Pooled database and Redis connections must not be shared across a fork.
    app.batch_core.after_fork()
