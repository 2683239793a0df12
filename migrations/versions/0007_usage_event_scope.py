"""usage event ids are unique per location, not per organization

Revision ID: 0007_usage_scope
Revises: 0003_crm
Create Date: 2026-12-01 10:00:00.000000

Each event keeps the location its client had when it arrived (backfilled from the
clients); the unique index spans the organization, that location (0 for the
agency's own clients) and the sender's id. Downgrading fails if two locations
have since used the same id.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_usage_scope"
down_revision: str | Sequence[str] | None = "0003_crm"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCOPE_INDEX = "uq_crm_usage_events_scope_event_id"


def upgrade() -> None:
    with op.batch_alter_table("crm_usage_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("location_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_crm_usage_events_location_id_locations"),
            "locations",
            ["location_id"],
            ["id"],
        )
        batch_op.drop_constraint("uq_crm_usage_events_org_id_event_id", type_="unique")
    op.execute(
        "UPDATE crm_usage_events SET location_id = "
        "(SELECT location_id FROM crm_clients WHERE crm_clients.id = crm_usage_events.client_id)"
    )
    op.create_index(
        SCOPE_INDEX,
        "crm_usage_events",
        ["org_id", sa.text("coalesce(location_id, 0)"), "event_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(SCOPE_INDEX, table_name="crm_usage_events")
    with op.batch_alter_table("crm_usage_events", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_crm_usage_events_org_id_event_id", ["org_id", "event_id"]
        )
        batch_op.drop_constraint("fk_crm_usage_events_location_id_locations", type_="foreignkey")
        batch_op.drop_column("location_id")
