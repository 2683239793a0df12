"""usage analytics per key: counters and a latency histogram per key and minute (hour
once rolled up), and 4xx answers by problem code

Revision ID: 0010_key_usage
Revises: 0001
Create Date: 2026-12-01 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyrack.storage.tables.base

revision: str = "0010_key_usage"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BUCKETS = 13


def _key_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column(
            "start", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "key_usage",
        *_key_columns(),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("rate_limited", sa.Integer(), nullable=False),
        *[sa.Column(f"latency_{i}", sa.Integer(), nullable=False) for i in range(_BUCKETS)],
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_key_usage_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", "period", "start", name=op.f("pk_key_usage")),
    )
    op.create_index("ix_key_usage_period_start", "key_usage", ["period", "start"])
    op.create_table(
        "key_usage_problems",
        *_key_columns(),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_key_usage_problems_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "key_id", "period", "start", "code", name=op.f("pk_key_usage_problems")
        ),
    )
    op.create_index(
        "ix_key_usage_problems_period_start", "key_usage_problems", ["period", "start"]
    )


def downgrade() -> None:
    op.drop_index("ix_key_usage_problems_period_start", table_name="key_usage_problems")
    op.drop_table("key_usage_problems")
    op.drop_index("ix_key_usage_period_start", table_name="key_usage")
    op.drop_table("key_usage")
