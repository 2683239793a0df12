"""crm: clients, contacts, contracts, usage events, pulse responses

Revision ID: 0003_crm
Revises: 0001
Create Date: 2026-11-23 23:03:58.005093
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyrack.storage.tables.base

revision: str = "0003_crm"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crm_clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner_email", sa.String(length=320), nullable=True),
        sa.Column("arr_cents", sa.BigInteger(), nullable=False),
        sa.Column("health", sa.Integer(), nullable=True),
        sa.Column("custom_fields", sa.JSON(), nullable=False),
        sa.Column(
            "created_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_crm_clients_location_id_locations")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_crm_clients_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_clients")),
        sa.UniqueConstraint("ref", name=op.f("uq_crm_clients_ref")),
    )
    with op.batch_alter_table("crm_clients", schema=None) as batch_op:
        batch_op.create_index("ix_crm_clients_location_id_id", ["location_id", "id"], unique=False)
        batch_op.create_index("ix_crm_clients_org_id_id", ["org_id", "id"], unique=False)

    op.create_table(
        "crm_contacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=40), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["crm_clients.id"],
            name=op.f("fk_crm_contacts_client_id_crm_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_crm_contacts_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_contacts")),
        sa.UniqueConstraint("ref", name=op.f("uq_crm_contacts_ref")),
    )
    with op.batch_alter_table("crm_contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crm_contacts_client_id"), ["client_id"], unique=False)
        batch_op.create_index("ix_crm_contacts_org_id_id", ["org_id", "id"], unique=False)

    op.create_table(
        "crm_contracts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("recurring_amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("recurring_interval", sa.String(length=16), nullable=True),
        sa.Column(
            "created_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["crm_clients.id"],
            name=op.f("fk_crm_contracts_client_id_crm_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_crm_contracts_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_contracts")),
        sa.UniqueConstraint("ref", name=op.f("uq_crm_contracts_ref")),
    )
    with op.batch_alter_table("crm_contracts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crm_contracts_client_id"), ["client_id"], unique=False)
        batch_op.create_index("ix_crm_contracts_org_id_id", ["org_id", "id"], unique=False)

    op.create_table(
        "crm_usage_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column(
            "occurred_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column(
            "received_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["crm_clients.id"],
            name=op.f("fk_crm_usage_events_client_id_crm_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_crm_usage_events_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_usage_events")),
        sa.UniqueConstraint("org_id", "event_id", name=op.f("uq_crm_usage_events_org_id_event_id")),
    )
    with op.batch_alter_table("crm_usage_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_crm_usage_events_client_id_day", ["client_id", "day"], unique=False
        )
        batch_op.create_index("ix_crm_usage_events_org_id_day", ["org_id", "day"], unique=False)

    op.create_table(
        "crm_pulse_responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "responded_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column(
            "created_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["crm_clients.id"],
            name=op.f("fk_crm_pulse_responses_client_id_crm_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["crm_contacts.id"],
            name=op.f("fk_crm_pulse_responses_contact_id_crm_contacts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_crm_pulse_responses_org_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_pulse_responses")),
        sa.UniqueConstraint("ref", name=op.f("uq_crm_pulse_responses_ref")),
    )
    with op.batch_alter_table("crm_pulse_responses", schema=None) as batch_op:
        batch_op.create_index(
            "ix_crm_pulse_responses_client_id_day", ["client_id", "day"], unique=False
        )
        batch_op.create_index("ix_crm_pulse_responses_org_id_id", ["org_id", "id"], unique=False)


def downgrade() -> None:
    for table in (
        "crm_pulse_responses",
        "crm_usage_events",
        "crm_contracts",
        "crm_contacts",
        "crm_clients",
    ):
        op.drop_table(table)
