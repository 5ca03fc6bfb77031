"""Initial audit schema: hash-chained event tables, projections, append-only triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

The trigger SQL is written out here (not imported from ``audit``) so this revision stays what it was
when it shipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EVENT_TABLES = ("associations", "instances", "study_events", "analyses", "exports", "qa_events")
GENESIS_HASH = "0" * 64


def _chain_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("seq", BigInt, autoincrement=False, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
    ]


def _event_table(name: str, *columns: sa.Column[Any], indexes: Sequence[str] = ()) -> None:
    op.create_table(name, *_chain_columns(), *columns,
                    sa.PrimaryKeyConstraint("seq", name=op.f(f"pk_{name}")))
    op.create_index(op.f(f"ix_{name}_ts"), name, ["ts"])
    for column in indexes:
        op.create_index(op.f(f"ix_{name}_{column}"), name, [column])


def _append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            """
            CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit table % is append-only (% rejected)', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END $$
            """
        )
        for table in EVENT_TABLES:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()")
    elif dialect == "sqlite":
        for table in EVENT_TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'audit table {table} is append-only "
                    f"({action} rejected)'); END"
                )
    else:  # pragma: no cover - only the two supported databases
        raise NotImplementedError(f"audit schema does not support {dialect}")


def _drop_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table in EVENT_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    elif dialect == "sqlite":
        for table in EVENT_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")


def upgrade() -> None:
    _event_table(
        "associations",
        sa.Column("event", sa.String(8), nullable=False),
        sa.Column("association_id", BigInt, nullable=False),
        sa.Column("peer_ae", sa.String(16), nullable=True),
        sa.Column("peer_host", sa.String(255), nullable=True),
        sa.Column("peer_port", sa.Integer(), nullable=True),
        sa.Column("called_ae", sa.String(16), nullable=True),
        sa.Column("tls", sa.Boolean(), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=True),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("instances", sa.Integer(), nullable=True),
        indexes=("association_id", "peer_ae"),
    )
    _event_table(
        "instances",
        sa.Column("association_id", BigInt, nullable=True),
        sa.Column("study_uid", sa.String(64), nullable=True),
        sa.Column("series_uid", sa.String(64), nullable=True),
        sa.Column("sop_uid", sa.String(64), nullable=True),
        sa.Column("sop_class_uid", sa.String(64), nullable=True),
        sa.Column("transfer_syntax", sa.String(64), nullable=True),
        sa.Column("size", BigInt, nullable=False),
        sa.Column("digest", sa.String(128), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("calling_ae", sa.String(16), nullable=True),
        sa.Column("patient_hash", sa.String(64), nullable=True),
        sa.Column("accession", sa.String(64), nullable=True),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("body_part", sa.String(64), nullable=True),
        indexes=("association_id", "patient_hash", "sop_uid", "status", "study_uid"),
    )
    _event_table(
        "study_events",
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("regular", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("accession", sa.String(64), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        indexes=("state", "study_uid"),
    )
    _event_table(
        "analyses",
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("bundle_version", sa.String(128), nullable=False),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("timings", sa.Text(), nullable=False),
        sa.Column("total_seconds", sa.Float(), nullable=True),
        sa.Column("lesions", sa.Text(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("label", sa.String(32), nullable=True),
        sa.Column("roi_source", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sr_sop_uid", sa.String(64), nullable=True),
        indexes=("bundle_version", "label"),
    )
    op.create_index("ix_analyses_study_uid_bundle_version", "analyses",
                    ["study_uid", "bundle_version"])
    _event_table(
        "exports",
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(300), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sr_sop_uid", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        indexes=("status", "study_uid"),
    )
    _event_table(
        "qa_events",
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        indexes=("actor",),
    )

    chain_head = op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", BigInt, nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_head")),
    )
    op.bulk_insert(chain_head, [{"id": 1, "seq": 0, "row_hash": GENESIS_HASH}])

    op.create_table(
        "studies",
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("accession", sa.String(64), nullable=True),
        sa.Column("patient_hash", sa.String(64), nullable=True),
        sa.Column("calling_ae", sa.String(16), nullable=True),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("body_part", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", BigInt, nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("bundle_version", sa.String(128), nullable=True),
        sa.Column("label", sa.String(32), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("sr_sop_uid", sa.String(64), nullable=True),
        sa.Column("analysis_seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("study_uid", name=op.f("pk_studies")),
    )
    for column in ("accession", "bundle_version", "calling_ae", "first_seen", "label", "last_seq",
                   "patient_hash", "state", "updated_at"):
        op.create_index(op.f(f"ix_studies_{column}"), "studies", [column])

    op.create_table(
        "study_exports",
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sr_sop_uid", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("study_uid", "destination", name=op.f("pk_study_exports")),
    )
    op.create_index(op.f("ix_study_exports_status"), "study_exports", ["status"])

    _append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    for table in ("study_exports", "studies", "chain_head", *reversed(EVENT_TABLES)):
        op.drop_table(table)
