"""schedules: must start within, must succeed within, alert after N failures

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.add_column(sa.Column("must_start_within_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("must_succeed_within_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("alert_after_failures", sa.Integer(), nullable=False, server_default="1")
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.drop_column("alert_after_failures")
        batch_op.drop_column("must_succeed_within_seconds")
        batch_op.drop_column("must_start_within_seconds")
