"""schedules: an index for the list's job and enabled filters together, ordered by name

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index("ix_schedules_job_enabled", "schedules", ["job", "enabled", "name"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_schedules_job_enabled", table_name="schedules")
