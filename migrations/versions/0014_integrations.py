"""integrations: connections, syncs, change history, runs and their records

Revision ID: 0014_integrations
Revises: 0012_engagements_external_ids
Create Date: 2026-12-01 13:23:54.061819

Connections (sealed credential, status, last success and error), one sync per record
type and direction (filters, field mappings, schedule, watermark), the append-only
change history, runs (counts, checkpoint) and the outcome of each record a run touched.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyrack.storage.tables.base

revision: str = "0014_integrations"
down_revision: str | Sequence[str] | None = "0012_engagements_external_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("base_url", sa.String(length=2000), nullable=True),
        sa.Column("credential_sealed", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=64), nullable=True),
        sa.Column(
            "last_success_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_error_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column(
            "last_probed_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("connected_by", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_integrations_location_id_locations")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_integrations_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrations")),
        sa.UniqueConstraint("ref", name=op.f("uq_integrations_ref")),
    )
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.create_index("ix_integrations_last_probed_at", ["last_probed_at"], unique=False)
        batch_op.create_index("ix_integrations_org_id_id", ["org_id", "id"], unique=False)

    op.create_table(
        "integration_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column(
            "occurred_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("actor_label", sa.String(length=200), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("what", sa.String(length=100), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_integration_changes_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_changes")),
    )
    with op.batch_alter_table("integration_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_integration_changes_integration_id_id", ["integration_id", "id"], unique=False
        )

    op.create_table(
        "integration_syncs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("record_type", sa.String(length=16), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("field_mappings", sa.JSON(), nullable=False),
        sa.Column("schedule_seconds", sa.Integer(), nullable=False),
        sa.Column("watermark", sa.String(length=200), nullable=True),
        sa.Column(
            "next_run_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "updated_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_integration_syncs_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_syncs")),
        sa.UniqueConstraint(
            "integration_id",
            "record_type",
            "direction",
            name=op.f("uq_integration_syncs_integration_id_record_type_direction"),
        ),
    )
    with op.batch_alter_table("integration_syncs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_integration_syncs_enabled_next_run_at", ["enabled", "next_run_at"], unique=False
        )

    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("retry_of", sa.Integer(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("api_calls", sa.Integer(), nullable=False),
        sa.Column("rate_limit_wait_seconds", sa.Double(), nullable=False),
        sa.Column("watermark_before", sa.JSON(), nullable=False),
        sa.Column("watermark_after", sa.JSON(), nullable=False),
        sa.Column("done", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "started_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "finished_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_sync_runs_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["retry_of"], ["sync_runs.id"], name=op.f("fk_sync_runs_retry_of_sync_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
        sa.UniqueConstraint("ref", name=op.f("uq_sync_runs_ref")),
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sync_runs_integration_id_id", ["integration_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_sync_runs_integration_id_status", ["integration_id", "status"], unique=False
        )

    op.create_table(
        "sync_run_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("record_type", sa.String(length=16), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("local_id", sa.String(length=64), nullable=True),
        sa.Column("remote_id", sa.String(length=255), nullable=True),
        sa.Column("name", sa.String(length=500), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.Column("skip", sa.JSON(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("exchange", sa.JSON(), nullable=True),
        sa.Column("keyed", sa.Integer(), nullable=True),
        sa.Column(
            "created_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["sync_runs.id"],
            name=op.f("fk_sync_run_records_run_id_sync_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_run_records")),
    )
    with op.batch_alter_table("sync_run_records", schema=None) as batch_op:
        batch_op.create_index("ix_sync_run_records_run_id_id", ["run_id", "id"], unique=False)
        batch_op.create_index(
            "ix_sync_run_records_run_id_outcome_id", ["run_id", "outcome", "id"], unique=False
        )
        batch_op.create_index(
            "ix_sync_run_records_local_id_keyed", ["local_id", "keyed"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sync_run_records", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_run_records_local_id_keyed")
        batch_op.drop_index("ix_sync_run_records_run_id_outcome_id")
        batch_op.drop_index("ix_sync_run_records_run_id_id")

    op.drop_table("sync_run_records")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_runs_integration_id_status")
        batch_op.drop_index("ix_sync_runs_integration_id_id")

    op.drop_table("sync_runs")
    with op.batch_alter_table("integration_syncs", schema=None) as batch_op:
        batch_op.drop_index("ix_integration_syncs_enabled_next_run_at")

    op.drop_table("integration_syncs")
    with op.batch_alter_table("integration_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_integration_changes_integration_id_id")

    op.drop_table("integration_changes")
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.drop_index("ix_integrations_org_id_id")
        batch_op.drop_index("ix_integrations_last_probed_at")

    op.drop_table("integrations")
