"""Indexes for the filtered studies list: by state, and by sending AE and state, newest first.

``eusdx audit studies --ae X --status S --since T`` (and the dashboard's worklist filters) used the
single-column index on ``state``; a common state matches most studies, so the database filtered and
sorted nearly the whole table (664 ms at 1,000,000 studies, bench/RESULTS.md). With the equality
columns first and ``first_seen, study_uid`` after them, it reads the newest matching rows in index
order and stops at the page size.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_studies_state_first_seen_study_uid": ["state", "first_seen", "study_uid"],
    "ix_studies_calling_ae_state_first_seen": ["calling_ae", "state", "first_seen", "study_uid"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(op.f(name), "studies", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(op.f(name), table_name="studies")
