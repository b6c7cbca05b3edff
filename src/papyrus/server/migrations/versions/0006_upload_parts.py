"""Staged uploads: parts of a client transaction too large for one request.

Revision ID: 0006_upload_parts
Revises: 0005_hardening
Create Date: 2026-11-28 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_upload_parts"
down_revision = "0005_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_upload_parts",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("upload_id", sa.UUID(), nullable=False),
        sa.Column("part_index", sa.Integer(), nullable=False),
        sa.Column("part_count", sa.Integer(), nullable=False),
        sa.Column("tx_id", sa.BigInteger(), nullable=True),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "part_index >= 0 AND part_index < part_count",
            name=op.f("ck_sync_upload_parts_part_index_range"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_sync_upload_parts_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "user_id", "upload_id", "part_index", name=op.f("pk_sync_upload_parts")
        ),
    )
    op.create_index(
        op.f("ix_sync_upload_parts_created_at"), "sync_upload_parts", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_sync_upload_parts_created_at"), table_name="sync_upload_parts")
    op.drop_table("sync_upload_parts")
