"""schedules: the catch-up policy for missed fires, and since when one is disabled

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from batch.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.add_column(sa.Column("disabled_at", UTCDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("catch_up", sa.String(length=10), nullable=False, server_default="latest")
        )
        batch_op.add_column(
            sa.Column(
                "catch_up_window_seconds", sa.Integer(), nullable=False, server_default="86400"
            )
        )
        batch_op.add_column(
            sa.Column("catch_up_max", sa.Integer(), nullable=False, server_default="10")
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.drop_column("catch_up_max")
        batch_op.drop_column("catch_up_window_seconds")
        batch_op.drop_column("catch_up")
        batch_op.drop_column("disabled_at")
