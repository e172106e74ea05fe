"""runs: the kind of each run's trigger, indexed with the creation time for the runs list

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: batch.models.TRIGGER_PREFIXES when this revision was written (a migration keeps its own).
TRIGGER_PREFIXES = {"schedule": "schedule:", "user": "user:", "api": "api:", "cli": "cli"}


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column("trigger_kind", sa.String(20), nullable=False, server_default="other")
        )
    runs = sa.table("runs", sa.column("trigger", sa.String), sa.column("trigger_kind", sa.String))
    for kind, prefix in TRIGGER_PREFIXES.items():
        # The prefixes hold no LIKE wildcard: a plain LIKE is a prefix test.
        op.execute(runs.update().where(runs.c.trigger.like(f"{prefix}%")).values(trigger_kind=kind))
    op.create_index("ix_runs_trigger_kind_created", "runs", ["trigger_kind", "created_at"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_runs_trigger_kind_created", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("trigger_kind")
