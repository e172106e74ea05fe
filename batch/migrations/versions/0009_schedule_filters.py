"""schedules: indexes for the list's filters on job and queue, each ordered by name

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_schedules_job": ["job", "name"],
    "ix_schedules_queue": ["queue", "name"],
}


def upgrade() -> None:
    """Upgrade schema."""
    for name, columns in INDEXES.items():
        op.create_index(name, "schedules", columns)


def downgrade() -> None:
    """Downgrade schema."""
    for name in INDEXES:
        op.drop_index(name, table_name="schedules")
