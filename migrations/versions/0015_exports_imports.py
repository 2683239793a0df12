"""bulk exports and uploads: their jobs, their files' parts, each uploaded row's outcome

Revision ID: 0015_exports_imports
Revises: 0012_engagements_external_ids
Create Date: 2026-12-01 13:40:00.000000

An export's file is kept in the database, in parts of at most 256 KiB, so any
instance can serve its download; an uploaded file likewise, so any worker can read it.
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


    op.create_table(
        "imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("resource", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows_done", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("unchanged", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_imports_location_id_locations")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_imports_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imports")),
        sa.UniqueConstraint("ref", name=op.f("uq_imports_ref")),
    )
    op.create_index("ix_imports_org_id_id", "imports", ["org_id", "id"], unique=False)
    op.create_table(
        "import_parts",
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["imports.id"],
            name=op.f("fk_import_parts_import_id_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("import_id", "seq", name=op.f("pk_import_parts")),
    )
    op.create_table(
        "import_rows",
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("line", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=True),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["imports.id"],
            name=op.f("fk_import_rows_import_id_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("import_id", "line", name=op.f("pk_import_rows")),
    )
    op.create_index(
        "ix_import_rows_import_id_outcome_line",
        "import_rows",
        ["import_id", "outcome", "line"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_import_rows_import_id_outcome_line", table_name="import_rows")
    op.drop_table("import_rows")
    op.drop_table("import_parts")
    op.drop_index("ix_imports_org_id_id", table_name="imports")
    op.drop_table("imports")
    op.drop_table("export_parts")
    op.drop_index("ix_exports_status_download_expires_at", table_name="exports")
    op.drop_index("ix_exports_org_id_id", table_name="exports")
    op.drop_table("exports")
