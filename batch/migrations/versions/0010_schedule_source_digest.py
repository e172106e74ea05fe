"""schedules.source_digest: the digest of the file a schedule was last imported from

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.add_column(sa.Column("source_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.drop_column("source_digest")
