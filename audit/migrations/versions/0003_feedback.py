"""Feedback: radiologist / QA verdicts and pathology results, appended to the chain; an index
for the dashboard's keyset paging of studies.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLE = "feedback"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("seq", BigInt, autoincrement=False, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("corrected_label", sa.String(32), nullable=True),
        sa.Column("truth", sa.String(32), nullable=True),
        sa.Column("diagnosed_on", sa.String(10), nullable=True),
        sa.Column("source", sa.String(32), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("bundle_version", sa.String(128), nullable=True),
        sa.Column("recorded_by", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f(f"pk_{TABLE}")),
    )
    op.create_index(op.f(f"ix_{TABLE}_ts"), TABLE, ["ts"])
    op.create_index(op.f(f"ix_{TABLE}_study_uid"), TABLE, ["study_uid"])
    op.create_index(op.f("ix_studies_first_seen_study_uid"), "studies", ["first_seen", "study_uid"])
    if op.get_bind().dialect.name == "postgresql":
        # audit_append_only() was created by revision 0001.
        op.execute(f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
                   "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
        op.execute(f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()")
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {TABLE}_no_{action.lower()} BEFORE {action} ON {TABLE} "
                f"BEGIN SELECT RAISE(ABORT, 'audit table {TABLE} is append-only "
                f"({action} rejected)'); END"
            )


def downgrade() -> None:
    rows = op.get_bind().execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar_one()
    if rows:
        # Their seq numbers would leave gaps that `audit verify` reports as deleted rows.
        raise RuntimeError(f"{TABLE} holds {rows} audit rows; downgrading would break the chain")
    op.drop_index(op.f("ix_studies_first_seen_study_uid"), table_name="studies")
    op.drop_table(TABLE)  # drops its triggers too, on both databases
