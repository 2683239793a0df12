"""bulk exports: export jobs and their files' parts

Revision ID: 0015_exports_imports
Revises: 0012_engagements_external_ids
Create Date: 2026-12-01 13:40:00.000000

An export's file is kept in the database, in parts of at most 256 KiB, so any
instance can serve its download.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyrack.storage.tables.base

revision: str = "0015_exports_imports"
down_revision: str | Sequence[str] | None = "0012_engagements_external_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = keyrack.storage.tables.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("resource", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("gzip", sa.Boolean(), nullable=False),
        sa.Column("updated_since", UTC_DATETIME, nullable=True),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("rows_total", sa.BigInteger(), nullable=True),
        sa.Column("rows_done", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("next_updated_since", UTC_DATETIME, nullable=True),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.Column("download_expires_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_exports_location_id_locations")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_exports_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
        sa.UniqueConstraint("ref", name=op.f("uq_exports_ref")),
    )
    op.create_index("ix_exports_org_id_id", "exports", ["org_id", "id"], unique=False)
    op.create_index(
        "ix_exports_status_download_expires_at",
        "exports",
        ["status", "download_expires_at"],
        unique=False,
    )
    op.create_table(
        "export_parts",
        sa.Column("export_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"],
            ["exports.id"],
            name=op.f("fk_export_parts_export_id_exports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("export_id", "seq", name=op.f("pk_export_parts")),
    )


def downgrade() -> None:
    op.drop_table("export_parts")
    op.drop_index("ix_exports_status_download_expires_at", table_name="exports")
    op.drop_index("ix_exports_org_id_id", table_name="exports")
    op.drop_table("exports")
