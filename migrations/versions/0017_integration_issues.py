"""integration issues: persisting problems of a connection, one per cause

Revision ID: 0017_integration_issues
Revises: 0014_integrations
Create Date: 2026-12-01 14:20:00

An issue opens when a problem persists (the credential not active, a sync whose runs
keep failing, a filter that skips everything, a direction turned off right after it
worked), holds the support bundle of that moment, and resolves itself.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyrack.storage.tables.base

revision: str = "0017_integration_issues"
down_revision: str | Sequence[str] | None = "0014_integrations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integration_issues",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("cause", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("record_type", sa.String(length=16), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("bundle", sa.JSON(), nullable=True),
        sa.Column(
            "opened_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "last_seen_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "resolved_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_integration_issues_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_issues")),
        sa.UniqueConstraint("ref", name=op.f("uq_integration_issues_ref")),
    )
    with op.batch_alter_table("integration_issues", schema=None) as batch_op:
        batch_op.create_index(
            "ix_integration_issues_integration_id_resolved_at",
            ["integration_id", "resolved_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("integration_issues", schema=None) as batch_op:
        batch_op.drop_index("ix_integration_issues_integration_id_resolved_at")
    op.drop_table("integration_issues")
