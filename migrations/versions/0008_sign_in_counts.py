"""sign-in attempts counted per subject in one row, so counting and deciding is one statement

Revision ID: 0008_signin_outbox
Revises: 0006_console
Create Date: 2026-12-01 11:00:00.000000

The failure log (one row per failed sign-in, counted by a separate read) is
replaced by a count per subject and window; the log's rows are throttling state
of at most 15 minutes, so they are dropped, not carried over.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyrack.storage.tables.base

revision: str = "0008_signin_outbox"
down_revision: str | Sequence[str] | None = "0006_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sign_in_counts",
        sa.Column("subject_digest", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "window_started_at",
            keyrack.storage.tables.base.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("subject_digest", name=op.f("pk_console_sign_in_counts")),
    )
    with op.batch_alter_table("console_sign_in_counts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_console_sign_in_counts_window_started_at"),
            ["window_started_at"],
            unique=False,
        )
    with op.batch_alter_table("console_login_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_console_login_failures_subject_at")
    op.drop_table("console_login_failures")


def downgrade() -> None:
    op.create_table(
        "console_login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_digest", sa.String(length=64), nullable=False),
        sa.Column(
            "occurred_at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_login_failures")),
    )
    with op.batch_alter_table("console_login_failures", schema=None) as batch_op:
        batch_op.create_index(
            "ix_console_login_failures_subject_at", ["subject_digest", "occurred_at"], unique=False
        )
    with op.batch_alter_table("console_sign_in_counts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_sign_in_counts_window_started_at"))
    op.drop_table("console_sign_in_counts")
