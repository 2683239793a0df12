"""engagements, external ids on every CRM record, and the change clock

Revision ID: 0012_engagements_external_ids
Revises: 0007_usage_scope
Create Date: 2026-12-01 11:43:25.022510

Clients, contacts and contracts have had ``updated_at`` since 0003 (set to
``created_at`` on insert), so no row needs one; each gains an index on
``(org_id, updated_at, id)``, the order of ``?updated_since=`` lists. Each
organization's change clock starts at the latest ``updated_at`` of its records, so
no stamp given after the upgrade sorts before one given before it.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

import keyrack.storage.tables.base

revision: str = "0012_engagements_external_ids"
down_revision: str | Sequence[str] | None = "0007_usage_scope"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD_TABLES = ("crm_clients", "crm_contacts", "crm_contracts")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def upgrade() -> None:
    op.create_table(
        "crm_change_clocks",
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("last_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_crm_change_clocks_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_crm_change_clocks")),
    )
    op.create_table(
        "crm_external_ids",
        sa.Column("record_type", sa.String(length=16), nullable=False),
        sa.Column("record_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_crm_external_ids_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint(
            "record_type", "record_id", "system", name=op.f("pk_crm_external_ids")
        ),
        sa.UniqueConstraint(
            "org_id",
            "record_type",
            "system",
            "external_id",
            name=op.f("uq_crm_external_ids_org_id_record_type_system_external_id"),
        ),
    )
    op.create_table(
        "crm_engagements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "occurred_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("subject", sa.String(length=500), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["crm_clients.id"],
            name=op.f("fk_crm_engagements_client_id_crm_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["crm_contacts.id"],
            name=op.f("fk_crm_engagements_contact_id_crm_contacts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_crm_engagements_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_crm_engagements_owner_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_engagements")),
        sa.UniqueConstraint("ref", name=op.f("uq_crm_engagements_ref")),
    )
    with op.batch_alter_table("crm_engagements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crm_engagements_client_id"), ["client_id"])
        batch_op.create_index(batch_op.f("ix_crm_engagements_contact_id"), ["contact_id"])
        batch_op.create_index("ix_crm_engagements_org_id_id", ["org_id", "id"])
        batch_op.create_index(
            "ix_crm_engagements_org_id_updated_at_id", ["org_id", "updated_at", "id"]
        )
    for table in RECORD_TABLES:
        op.create_index(f"ix_{table}_org_id_updated_at_id", table, ["org_id", "updated_at", "id"])
    _start_clocks()


def _start_clocks() -> None:
    """One clock per organization with records, at the latest of their ``updated_at``."""
    latest: dict[int, datetime] = {}
    bind = op.get_bind()
    for name in RECORD_TABLES:
        table = sa.table(
            name,
            sa.column("org_id", sa.Integer()),
            sa.column("updated_at", keyrack.storage.tables.base.UTCDateTime(timezone=True)),
        )
        rows = bind.execute(
            sa.select(table.c.org_id, sa.func.max(table.c.updated_at)).group_by(table.c.org_id)
        )
        for org_id, updated_at in rows:
            latest[org_id] = max(updated_at, latest.get(org_id, updated_at))
    if latest:
        clocks = sa.table(
            "crm_change_clocks", sa.column("org_id", sa.Integer()), sa.column("last_us")
        )
        op.bulk_insert(
            clocks,
            [
                {"org_id": org_id, "last_us": (moment - EPOCH) // MICROSECOND}
                for org_id, moment in latest.items()
            ],
        )


def downgrade() -> None:
    for table in RECORD_TABLES:
        op.drop_index(f"ix_{table}_org_id_updated_at_id", table_name=table)
    with op.batch_alter_table("crm_engagements", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_engagements_org_id_updated_at_id")
        batch_op.drop_index("ix_crm_engagements_org_id_id")
        batch_op.drop_index(batch_op.f("ix_crm_engagements_contact_id"))
        batch_op.drop_index(batch_op.f("ix_crm_engagements_client_id"))
    op.drop_table("crm_engagements")
    op.drop_table("crm_external_ids")
    op.drop_table("crm_change_clocks")
