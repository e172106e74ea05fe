"""alert events and their deliveries: the outbox of webhooks and e-mail

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import batch.db

# revision identifiers, used by Alembic.
revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "alert_events",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(300), nullable=False),
        sa.Column("event", sa.String(10), nullable=False),
        sa.Column("at", batch.db.UTCDateTime(), nullable=False),
        sa.Column("expanded_at", batch.db.UTCDateTime(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alert_events_new", "alert_events", ["expanded_at", "id"])
    op.create_table(
        "alert_deliveries",
        sa.Column(
            "event_id",
            BIG_ID,
            sa.ForeignKey("alert_events.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("target", sa.String(2000), primary_key=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", batch.db.UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", batch.db.UTCDateTime(), nullable=True),
    )
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["state", "next_attempt_at"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_alert_deliveries_due", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index("ix_alert_events_new", table_name="alert_events")
    op.drop_table("alert_events")
