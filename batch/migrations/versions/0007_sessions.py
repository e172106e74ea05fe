"""sessions: a server-side row per signed-in admin session

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import batch.db

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # Sign-out, removing a user and a new password end a session by deleting its row; a
    # cookie signed before this revision names no session and so signs nobody in.
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_name", sa.String(length=100), nullable=False),
        sa.Column("created_at", batch.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", batch.db.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", batch.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index("ix_sessions_expires", ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_user_name"), ["user_name"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("sessions")
