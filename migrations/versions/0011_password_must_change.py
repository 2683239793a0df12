"""a password Keyrack issued must be changed at the next sign-in

Revision ID: 0011_password_must_change
Revises: 0001
Create Date: 2026-12-01 12:00:00.000000

Passwords issued by the system (the first run, ``keyrack users create``, the
console's "Add user", a reset) are marked; signing in with one leads only to the
password change. Existing users keep the password they have, unmarked.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_password_must_change"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "password_must_change", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_must_change")
