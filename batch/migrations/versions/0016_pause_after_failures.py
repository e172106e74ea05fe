"""schedules: pause after N failures in a row, and why one paused

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.add_column(sa.Column("pause_after_failures", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("paused_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.drop_column("paused_reason")
        batch_op.drop_column("pause_after_failures")
