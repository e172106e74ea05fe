"""schedules: room for the overlap policies buffer_one and cancel_other; runs: an index on
status and sent_at, for the released fires the run driver sends; alert_events: by alert

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.alter_column(
            "overlap", existing_type=sa.String(length=10), type_=sa.String(length=20)
        )
    op.create_index("ix_runs_status_sent", "runs", ["status", "sent_at"])
    op.create_index("ix_alert_events_alert", "alert_events", ["alert_id"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_alert_events_alert", table_name="alert_events")
    op.drop_index("ix_runs_status_sent", table_name="runs")
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.alter_column(
            "overlap", existing_type=sa.String(length=20), type_=sa.String(length=10)
        )
