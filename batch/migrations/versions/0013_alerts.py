"""alerts: raised once per cause, resolved by a schedule's next success

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import batch.db

# revision identifiers, used by Alembic.
revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("schedule_name", sa.String(200), nullable=True),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("raised_at", batch.db.UTCDateTime(), nullable=False),
        sa.Column("resolved_at", batch.db.UTCDateTime(), nullable=True),
        sa.Column("resolved_by", sa.String(36), nullable=True),
    )
    op.create_index("ix_alerts_open", "alerts", ["resolved_at", "raised_at"])
    op.create_index("ix_alerts_schedule", "alerts", ["schedule_name", "raised_at"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_alerts_schedule", table_name="alerts")
    op.drop_index("ix_alerts_open", table_name="alerts")
    op.drop_table("alerts")
