"""run_stats: the running totals behind /metrics; api_tokens: a scope (api or metrics)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "run_stats",
        sa.Column("job", sa.String(length=200), nullable=False),
        sa.Column("schedule_name", sa.String(length=200), nullable=False),
        sa.Column("series", sa.String(length=20), nullable=False),
        sa.Column("label", sa.String(length=20), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job", "schedule_name", "series", "label"),
    )
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.add_column(
            sa.Column("scope", sa.String(length=10), server_default="api", nullable=False)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.drop_column("scope")
    op.drop_table("run_stats")
