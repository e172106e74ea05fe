"""Migrations: the models and the migration scripts describe the same schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command

from batch import migrate


def test_migrations_match_the_models_and_downgrade_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate.upgrade(url)
    command.check(migrate.alembic_config(url))  # raises if autogenerate would find a change
    command.downgrade(migrate.alembic_config(url), "base")
    migrate.upgrade(url)
