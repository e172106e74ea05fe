"""schedule_changes: a note per schedule write, so reconcile follows what changed

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import batch.db

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # No notes for the schedules that exist: a Redis without a reconciled revision (every
    # Redis before this one) gets a full pass first.
    op.create_table(
        "schedule_changes",
        sa.Column(
            "revision",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("changed_at", batch.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("revision"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("schedule_changes")
