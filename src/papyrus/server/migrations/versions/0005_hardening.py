"""Hardening: failed logins counted per source, and the sources each account signs in from.

Revision ID: 0005_hardening
Revises: 0004_oauth_app_pkce
Create Date: 2026-11-30 01:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_hardening"
down_revision = "0004_oauth_app_pkce"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Failures recorded before this revision have no source: they count only towards the
    # per-email limit, and expire with its window.
    op.add_column(
        "login_failures",
        sa.Column("source", sa.String(length=64), server_default="", nullable=False),
    )
    op.create_table(
        "login_known_sources",
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column(
            "last_success_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("email", "source", name=op.f("pk_login_known_sources")),
    )


def downgrade() -> None:
    op.drop_table("login_known_sources")
    op.drop_column("login_failures", "source")
