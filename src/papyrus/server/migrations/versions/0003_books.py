"""Books (synced to clients by PowerSync), upload rejections, and the `powersync` publication.

Revision ID: 0003_books
Revises: 0002_oauth
Create Date: 2026-11-26 16:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_books"
down_revision = "0002_oauth"
branch_labels = None
depends_on = None

# The PowerSync service replicates exactly the tables in this publication (its name is fixed by
# the service). It lists only synced tables: never `users` or anything holding secrets.
PUBLICATION = "powersync"


def upgrade() -> None:
    op.create_table(
        "books",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("owner_user_id", sa.UUID(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("subtitle", sa.String(length=500), nullable=True),
        sa.Column("author", sa.String(length=500), nullable=True),
        sa.Column("co_authors", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("isbn", sa.String(length=32), nullable=True),
        sa.Column("isbn13", sa.String(length=32), nullable=True),
        sa.Column("publisher", sa.String(length=500), nullable=True),
        sa.Column("language", sa.String(length=35), nullable=True),
        sa.Column("page_count", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(length=20000), nullable=True),
        sa.Column("cover_image_url", sa.String(length=2048), nullable=True),
        sa.Column("reading_status", sa.String(length=16), nullable=True),
        sa.Column("current_page", sa.Integer(), nullable=True),
        sa.Column("current_position", sa.Double(), nullable=True),
        sa.Column("current_cfi", sa.String(length=4096), nullable=True),
        sa.Column("is_favorite", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("custom_metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "added_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "char_length(title) BETWEEN 1 AND 500", name=op.f("ck_books_title_length")
        ),
        sa.CheckConstraint("page_count >= 0", name=op.f("ck_books_page_count_non_negative")),
        sa.CheckConstraint("current_page >= 0", name=op.f("ck_books_current_page_non_negative")),
        sa.CheckConstraint(
            "current_position >= 0 AND current_position <= 1",
            name=op.f("ck_books_current_position_range"),
        ),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name=op.f("ck_books_rating_range")),
        sa.CheckConstraint(
            "reading_status IN ('not_started', 'reading', 'finished', 'abandoned')",
            name=op.f("ck_books_reading_status_valid"),
        ),
        sa.CheckConstraint(
            "jsonb_typeof(co_authors) = 'array'", name=op.f("ck_books_co_authors_array")
        ),
        sa.CheckConstraint(
            "jsonb_typeof(custom_metadata) = 'object'",
            name=op.f("ck_books_custom_metadata_object"),
        ),
        sa.ForeignKeyConstraint(
            ["owner_user_id"],
            ["users.id"],
            name=op.f("fk_books_owner_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_books")),
    )
    op.create_index(op.f("ix_books_owner_user_id"), "books", ["owner_user_id"], unique=False)

    op.create_table(
        "sync_rejections",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("upload_id", sa.UUID(), nullable=False),
        sa.Column("tx_id", sa.BigInteger(), nullable=True),
        sa.Column("op_id", sa.BigInteger(), nullable=True),
        sa.Column("op", sa.String(length=8), nullable=True),
        sa.Column("row_id", sa.String(length=64), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("message", sa.String(length=2000), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_sync_rejections_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_rejections")),
    )
    op.create_index(
        op.f("ix_sync_rejections_user_id"), "sync_rejections", ["user_id"], unique=False
    )

    # Creating a publication needs no wal_level=logical (replicating from it does). If one named
    # `powersync` exists already (made by hand, or FOR ALL TABLES), books joins it or is covered.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '{PUBLICATION}') THEN
                CREATE PUBLICATION {PUBLICATION} FOR TABLE books;
            ELSIF NOT (SELECT puballtables FROM pg_publication WHERE pubname = '{PUBLICATION}')
                AND NOT EXISTS (
                    SELECT 1 FROM pg_publication_tables
                    WHERE pubname = '{PUBLICATION}' AND schemaname = current_schema()
                      AND tablename = 'books') THEN
                ALTER PUBLICATION {PUBLICATION} ADD TABLE books;
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    # Dropping the table also drops it from the publication, which is left in place (empty or
    # not): other synced tables, or whoever made it, may still use it.
    op.drop_index(op.f("ix_sync_rejections_user_id"), table_name="sync_rejections")
    op.drop_table("sync_rejections")
    op.drop_index(op.f("ix_books_owner_user_id"), table_name="books")
    op.drop_table("books")
