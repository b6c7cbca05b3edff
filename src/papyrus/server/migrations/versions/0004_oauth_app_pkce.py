"""OAuth: the app's PKCE challenge on pending flows and one-time codes.

Revision ID: 0004_oauth_app_pkce
Revises: 0003_books
Create Date: 2026-11-27 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_oauth_app_pkce"
down_revision = "0003_books"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: flows and codes without an app challenge (web, desktop loopback) keep working.
    op.add_column(
        "oauth_states", sa.Column("app_code_challenge", sa.String(length=128), nullable=True)
    )
    op.add_column(
        "oauth_codes", sa.Column("app_code_challenge", sa.String(length=128), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("oauth_codes", "app_code_challenge")
    op.drop_column("oauth_states", "app_code_challenge")
