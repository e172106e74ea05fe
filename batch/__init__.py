"""batch: scheduled, chunked, aggregated batch jobs on Celery, RedBeat and SQL."""

__version__ = "0.1.0"
