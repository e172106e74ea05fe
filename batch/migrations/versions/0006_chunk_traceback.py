"""chunk traceback: the bounded traceback of a failed chunk

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # An operator acts on a failed chunk from SQL: its error, spec, node, attempts and now
    # where in the code it failed (bounded to runs.MAX_TRACEBACK_CHARS).
    with op.batch_alter_table("run_chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traceback", sa.Text(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("run_chunks", schema=None) as batch_op:
        batch_op.drop_column("traceback")
