"""Migrations: the models and the migration scripts describe the same schema, on each database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from batch import migrate
from batch.settings import Settings


@pytest.fixture
def empty_database(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of the kind the suite runs on (SQLite file or PostgreSQL)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    name = f"batch_migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migrations_match_the_models_and_downgrade_cleanly(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    command.check(migrate.alembic_config(empty_database))  # raises if autogenerate finds a change
    command.downgrade(migrate.alembic_config(empty_database), "base")
    migrate.upgrade(empty_database)
