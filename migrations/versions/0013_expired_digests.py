"""retired digests (why a key stopped working), and imported secrets

Revision ID: 0013_expired_digests
Revises: 0001
Create Date: 2026-12-01 13:30:00.000000

A key deleted for inactivity or past its ``expires_at``, and a secret rolled away,
now keep their digests in ``retired_digests`` (reason, since when) so a caller still
presenting one is told when and why. Keys expired before this revision had their
digests erased: they stay unknown. ``key_secrets.imported`` marks secrets brought over
from another system by digest (``POST /api/v2/keys/import``), which lack the ``kr_``
shape; every instance holds their digests in memory.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyrack.storage.tables.base

revision: str = "0013_expired_digests"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retired_digests",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("at", keyrack.storage.tables.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("idle_days", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_retired_digests_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_retired_digests")),
    )
    with op.batch_alter_table("retired_digests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_retired_digests_key_id"), ["key_id"], unique=False)
    with op.batch_alter_table("key_secrets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("imported", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index("ix_key_secrets_imported_id", ["imported", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("key_secrets", schema=None) as batch_op:
        batch_op.drop_index("ix_key_secrets_imported_id")
        batch_op.drop_column("imported")
    with op.batch_alter_table("retired_digests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retired_digests_key_id"))
    op.drop_table("retired_digests")
