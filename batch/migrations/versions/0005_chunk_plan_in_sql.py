"""plan in SQL: spec, sends, sent_at and node of each chunk; sent_at of each run

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # Everything needed to send a chunk again, and to tell whose it is, lives in SQL.
    with op.batch_alter_table("run_chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spec", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("sends", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("sent_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("node", sa.String(length=255), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sent_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("sent_at")
    with op.batch_alter_table("run_chunks", schema=None) as batch_op:
        batch_op.drop_column("node")
        batch_op.drop_column("sent_at")
        batch_op.drop_column("sends")
        batch_op.drop_column("spec")
