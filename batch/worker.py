"""Entry point for ``celery -A batch.worker``: the app built from the environment."""

from celery.signals import worker_process_init

from batch.celery_app import create_celery
from batch.settings import Settings

app = create_celery(Settings.from_env())


@worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs: object) -> None:
    # Pooled database and Redis connections must not be shared across a fork.
    app.batch_core.after_fork()
