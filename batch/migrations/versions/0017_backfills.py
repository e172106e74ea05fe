"""backfills: runs for a schedule's past fires, and each run's backfill

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from batch.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "backfills",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("schedule_name", sa.String(length=200), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
        sa.Column("only", sa.String(length=10), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("fires", sa.Integer(), nullable=False),
        sa.Column("fires_done", sa.Integer(), nullable=False),
        sa.Column("next_fire", UTCDateTime(), nullable=True),
        sa.Column("runs_made", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_backfills_state", "backfills", ["state"])
    op.create_index("ix_backfills_schedule_created", "backfills", ["schedule_name", "created_at"])
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("backfill_id", BIG_ID, nullable=True))
        batch_op.create_index("ix_runs_backfill_status", ["backfill_id", "status"])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_index("ix_runs_backfill_status")
        batch_op.drop_column("backfill_id")
    op.drop_index("ix_backfills_schedule_created", table_name="backfills")
    op.drop_index("ix_backfills_state", table_name="backfills")
    op.drop_table("backfills")
