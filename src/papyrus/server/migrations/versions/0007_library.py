"""The reading library: ten more synced tables, books' new columns, same-owner references,
tombstones of deleted rows, and every synced table in the `powersync` publication.

Existing books keep their rows: the new book columns are nullable, the type changes only narrow
limits the upload validation already enforced (title ≤ 500, reading_status one of four values),
and the replaced CHECK constraints check what the old ones did, under the names the
declarations derive (`<column>_range`, `_choices`, `_shape`).

References are composite foreign keys `(ref, owner_user_id) → parent(id, owner_user_id)`, so a
row can never point at another reader's row, even when written outside the upload path.
`ON DELETE SET NULL (column)` needs PostgreSQL 15 or later.

Revision ID: 0007_library
Revises: 0006_upload_parts
Create Date: 2026-11-30 10:00:00.000000
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_library"
down_revision = "0006_upload_parts"
branch_labels = None
depends_on = None

PUBLICATION = "powersync"
SYNCED_TABLES = (
    "series",
    "books",
    "shelves",
    "tags",
    "book_shelves",
    "book_tags",
    "annotations",
    "notes",
    "bookmarks",
    "reading_sessions",
    "reading_goals",
)
INT4_MAX = 2147483647
LOCATION_SHAPE = (
    "CASE WHEN jsonb_typeof(\"location\") = 'object' THEN \"location\" <> '{}'::jsonb AND "
    "(\"location\" - ARRAY['cfi', 'page', 'fraction']) = '{}'::jsonb AND "
    "coalesce(jsonb_typeof(\"location\" -> 'cfi'), 'string') = 'string' AND "
    "coalesce(jsonb_typeof(\"location\" -> 'page'), 'number') = 'number' AND "
    "coalesce(jsonb_typeof(\"location\" -> 'fraction'), 'number') = 'number' AND "
    'NOT jsonb_path_exists("location", '
    "'$ ? (@.page < 0 || @.fraction < 0 || @.fraction > 1)') ELSE \"location\" IS NULL END"
)
COLOR_PATTERN = "\"color\" ~ '^(?:#[0-9a-fA-F]{6})$'"
TOMBSTONE_FUNCTION = """\
CREATE FUNCTION sync_record_tombstones() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sync_tombstones (user_id, table_name, row_id)
    SELECT d.owner_user_id, TG_TABLE_NAME, d.id::text FROM deleted_rows AS d
    WHERE EXISTS (SELECT 1 FROM users AS u WHERE u.id = d.owner_user_id)
    ON CONFLICT (user_id, table_name, row_id) DO UPDATE SET deleted_at = excluded.deleted_at;
    RETURN NULL;
END
$$"""


def _id(pair: bool = False) -> sa.Column[Any]:
    return sa.Column("id", sa.Text() if pair else sa.UUID(), nullable=False)


def _owner(table: str) -> list[Any]:
    """The owner column, its foreign key to users and its index arguments."""
    return [
        sa.Column("owner_user_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_user_id"],
            ["users.id"],
            name=op.f(f"fk_{table}_owner_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def _stamp(name: str) -> sa.Column[Any]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _same_owner_key(table: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint("id", "owner_user_id", name=op.f(f"uq_{table}_id_owner"))


def _reference(
    table: str, column: str, parent: str, set_null: bool = False
) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column, "owner_user_id"],
        [f"{parent}.id", f"{parent}.owner_user_id"],
        name=op.f(f"fk_{table}_{column}_{parent}"),
        ondelete=f"SET NULL ({column})" if set_null else "CASCADE",
    )


def _check(table: str, name: str, condition: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(condition, name=op.f(f"ck_{table}_{name}"))


def _indexes(table: str, *columns: str) -> None:
    for column in ("owner_user_id", *columns):
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def upgrade() -> None:
    op.create_table(
        "series",
        _id(),
        *_owner("series"),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("author", sa.String(length=500), nullable=True),
        sa.Column("description", sa.String(length=20000), nullable=True),
        sa.Column("total_books", sa.Integer(), nullable=True),
        _stamp("created_at"),
        _stamp("updated_at"),
        _same_owner_key("series"),
        _check("series", "name_length", 'char_length("name") BETWEEN 1 AND 500'),
        _check("series", "total_books_range", '"total_books" BETWEEN 0 AND 10000'),
    )
    _indexes("series")

    # books: the new columns (nullable: existing rows keep theirs), the derived constraints.
    op.add_column("books", sa.Column("series_id", sa.UUID(), nullable=True))
    op.add_column("books", sa.Column("series_number", sa.Double(), nullable=True))
    op.add_column("books", sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("books", sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("books", sa.Column("last_read_at", sa.DateTime(timezone=True), nullable=True))
    op.alter_column(
        "books",
        "title",
        existing_type=sa.Text(),
        type_=sa.String(length=500),
        existing_nullable=False,
    )
    op.alter_column(
        "books",
        "reading_status",
        existing_type=sa.String(length=16),
        type_=sa.String(length=11),
        existing_nullable=True,
    )
    for old in (
        "page_count_non_negative",
        "current_page_non_negative",
        "current_position_range",
        "reading_status_valid",
        "co_authors_array",
        "custom_metadata_object",
    ):
        op.drop_constraint(op.f(f"ck_books_{old}"), "books", type_="check")
    for name, condition in (
        ("page_count_range", f'"page_count" BETWEEN 0 AND {INT4_MAX}'),
        ("current_page_range", f'"current_page" BETWEEN 0 AND {INT4_MAX}'),
        ("current_position_range", '"current_position" BETWEEN 0.0 AND 1.0'),
        (
            "reading_status_choices",
            "\"reading_status\" IN ('not_started', 'reading', 'finished', 'abandoned')",
        ),
        (
            "co_authors_shape",
            "CASE WHEN jsonb_typeof(\"co_authors\") = 'array' THEN "
            'jsonb_array_length("co_authors") <= 100 AND '
            'NOT jsonb_path_exists("co_authors", \'$[*] ? (@.type() != "string")\') '
            'ELSE "co_authors" IS NULL END',
        ),
        ("custom_metadata_shape", "jsonb_typeof(\"custom_metadata\") = 'object'"),
        ("series_number_range", '"series_number" BETWEEN 0.0 AND 100000.0'),
        ("started_at_before_finished_at", '"started_at" <= "finished_at"'),
    ):
        op.create_check_constraint(op.f(f"ck_books_{name}"), "books", condition)
    op.create_unique_constraint(op.f("uq_books_id_owner"), "books", ["id", "owner_user_id"])
    op.create_foreign_key(
        op.f("fk_books_series_id_series"),
        "books",
        "series",
        ["series_id", "owner_user_id"],
        ["id", "owner_user_id"],
        ondelete="SET NULL (series_id)",
    )
    op.create_index(op.f("ix_books_series_id"), "books", ["series_id"], unique=False)

    op.create_table(
        "shelves",
        _id(),
        *_owner("shelves"),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=True),
        sa.Column("color", sa.String(length=7), nullable=True),
        sa.Column("parent_shelf_id", sa.UUID(), nullable=True),
        sa.Column("sort_order", sa.Integer(), nullable=True),
        _stamp("created_at"),
        _stamp("updated_at"),
        _same_owner_key("shelves"),
        _reference("shelves", "parent_shelf_id", "shelves", set_null=True),
        _check("shelves", "name_length", 'char_length("name") BETWEEN 1 AND 200'),
        _check("shelves", "color_length", 'char_length("color") BETWEEN 7 AND 7'),
        _check("shelves", "color_pattern", COLOR_PATTERN),
        _check("shelves", "sort_order_range", f'"sort_order" BETWEEN -{INT4_MAX} AND {INT4_MAX}'),
    )
    _indexes("shelves", "parent_shelf_id")

    op.create_table(
        "tags",
        _id(),
        *_owner("tags"),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("color", sa.String(length=7), nullable=True),
        _stamp("created_at"),
        _stamp("updated_at"),
        _same_owner_key("tags"),
        _check("tags", "name_length", 'char_length("name") BETWEEN 1 AND 100'),
        _check("tags", "color_length", 'char_length("color") BETWEEN 7 AND 7'),
        _check("tags", "color_pattern", COLOR_PATTERN),
    )
    _indexes("tags")
    # Tag names are unique per reader, ignoring case. An exclusion constraint on equality is a
    # unique key that can be checked at commit: one upload may rename a tag and reuse its name.
    op.execute(
        "ALTER TABLE tags ADD CONSTRAINT uq_tags_name EXCLUDE USING btree "
        "(owner_user_id WITH =, lower(name) WITH =) DEFERRABLE INITIALLY DEFERRED"
    )

    op.create_table(
        "book_shelves",
        _id(pair=True),
        *_owner("book_shelves"),
        sa.Column("book_id", sa.UUID(), nullable=False),
        sa.Column("shelf_id", sa.UUID(), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=True),
        _stamp("added_at"),
        _reference("book_shelves", "book_id", "books"),
        _reference("book_shelves", "shelf_id", "shelves"),
        _check("book_shelves", "id_pair", 'id = ("book_id"::text || \':\' || "shelf_id"::text)'),
        _check(
            "book_shelves",
            "sort_order_range",
            f'"sort_order" BETWEEN -{INT4_MAX} AND {INT4_MAX}',
        ),
    )
    _indexes("book_shelves", "book_id", "shelf_id")

    op.create_table(
        "book_tags",
        _id(pair=True),
        *_owner("book_tags"),
        sa.Column("book_id", sa.UUID(), nullable=False),
        sa.Column("tag_id", sa.UUID(), nullable=False),
        _stamp("added_at"),
        _reference("book_tags", "book_id", "books"),
        _reference("book_tags", "tag_id", "tags"),
        _check("book_tags", "id_pair", 'id = ("book_id"::text || \':\' || "tag_id"::text)'),
    )
    _indexes("book_tags", "book_id", "tag_id")

    op.create_table(
        "annotations",
        _id(),
        *_owner("annotations"),
        sa.Column("book_id", sa.UUID(), nullable=False),
        sa.Column("selected_text", sa.String(length=10000), nullable=False),
        sa.Column("color", sa.String(length=6), server_default=sa.text("'yellow'"), nullable=False),
        sa.Column("location", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("note", sa.String(length=20000), nullable=True),
        _stamp("created_at"),
        _stamp("updated_at"),
        _reference("annotations", "book_id", "books"),
        _check(
            "annotations",
            "selected_text_length",
            'char_length("selected_text") BETWEEN 1 AND 10000',
        ),
        _check(
            "annotations",
            "color_choices",
            "\"color\" IN ('yellow', 'green', 'blue', 'pink', 'purple', 'orange')",
        ),
        _check("annotations", "location_shape", LOCATION_SHAPE),
    )
    _indexes("annotations", "book_id")

    op.create_table(
        "notes",
        _id(),
        *_owner("notes"),
        sa.Column("book_id", sa.UUID(), nullable=True),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("content", sa.String(length=100000), nullable=True),
        sa.Column("location", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("pinned", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _stamp("created_at"),
        _stamp("updated_at"),
        _reference("notes", "book_id", "books"),
        _check("notes", "location_shape", LOCATION_SHAPE),
    )
    _indexes("notes", "book_id")

    op.create_table(
        "bookmarks",
        _id(),
        *_owner("bookmarks"),
        sa.Column("book_id", sa.UUID(), nullable=False),
        sa.Column("location", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        _stamp("created_at"),
        _stamp("updated_at"),
        _reference("bookmarks", "book_id", "books"),
        _check("bookmarks", "location_shape", LOCATION_SHAPE),
    )
    _indexes("bookmarks", "book_id")

    op.create_table(
        "reading_sessions",
        _id(),
        *_owner("reading_sessions"),
        sa.Column("book_id", sa.UUID(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("start_position", sa.Double(), nullable=True),
        sa.Column("end_position", sa.Double(), nullable=True),
        sa.Column("pages_read", sa.Integer(), nullable=True),
        sa.Column("device_label", sa.String(length=100), nullable=True),
        _stamp("created_at"),
        _reference("reading_sessions", "book_id", "books"),
        _check("reading_sessions", "start_position_range", '"start_position" BETWEEN 0.0 AND 1.0'),
        _check("reading_sessions", "end_position_range", '"end_position" BETWEEN 0.0 AND 1.0'),
        _check("reading_sessions", "pages_read_range", '"pages_read" BETWEEN 0 AND 100000'),
        _check("reading_sessions", "started_at_before_ended_at", '"started_at" <= "ended_at"'),
    )
    _indexes("reading_sessions", "book_id")

    op.create_table(
        "reading_goals",
        _id(),
        *_owner("reading_goals"),
        sa.Column("kind", sa.String(length=7), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=5), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        _stamp("created_at"),
        _stamp("updated_at"),
        _check("reading_goals", "kind_choices", "\"kind\" IN ('books', 'pages', 'minutes')"),
        _check("reading_goals", "target_range", '"target" BETWEEN 1 AND 1000000'),
        _check("reading_goals", "period_choices", "\"period\" IN ('year', 'month', 'week')"),
    )
    _indexes("reading_goals")

    # Deleted rows leave a tombstone (kept 90 days by the upload path), so a late offline write
    # cannot bring a deleted row back. A statement trigger per table also covers cascades.
    op.create_table(
        "sync_tombstones",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("table_name", sa.String(length=63), nullable=False),
        sa.Column("row_id", sa.Text(), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_sync_tombstones_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "table_name", "row_id", name=op.f("pk_sync_tombstones")),
    )
    op.create_index(
        "ix_sync_tombstones_user_id_deleted_at",
        "sync_tombstones",
        ["user_id", "deleted_at"],
        unique=False,
    )
    op.execute(TOMBSTONE_FUNCTION)
    for table in SYNCED_TABLES:
        op.execute(
            f"CREATE TRIGGER record_tombstones AFTER DELETE ON {table} "
            "REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT "
            "EXECUTE FUNCTION sync_record_tombstones()"
        )

    # Membership ids are "<uuid>:<uuid>" (73 characters): rejections must be able to name them.
    op.alter_column(
        "sync_rejections",
        "row_id",
        existing_type=sa.String(length=64),
        type_=sa.String(length=129),
        existing_nullable=True,
    )

    # Every synced table joins the publication (or is covered by a FOR ALL TABLES one).
    tables = ", ".join(f"'{t}'" for t in SYNCED_TABLES)
    op.execute(
        f"""
        DO $$
        DECLARE
            missing text;
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '{PUBLICATION}') THEN
                EXECUTE 'CREATE PUBLICATION {PUBLICATION}';
            END IF;
            IF (SELECT puballtables FROM pg_publication WHERE pubname = '{PUBLICATION}') THEN
                RETURN;
            END IF;
            SELECT string_agg(quote_ident(t), ', ') INTO missing
            FROM unnest(ARRAY[{tables}]) AS t
            WHERE NOT EXISTS (
                SELECT 1 FROM pg_publication_tables p
                WHERE p.pubname = '{PUBLICATION}' AND p.schemaname = current_schema()
                  AND p.tablename = t);
            IF missing IS NOT NULL THEN
                EXECUTE 'ALTER PUBLICATION {PUBLICATION} ADD TABLE ' || missing;
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    # Dropped tables leave the publication with them; books stays in it.
    op.alter_column(
        "sync_rejections",
        "row_id",
        existing_type=sa.String(length=129),
        type_=sa.String(length=64),
        existing_nullable=True,
        postgresql_using="left(row_id, 64)",
    )
    op.execute("DROP TRIGGER record_tombstones ON books")
    op.drop_constraint(op.f("fk_books_series_id_series"), "books", type_="foreignkey")
    op.drop_index("ix_sync_tombstones_user_id_deleted_at", table_name="sync_tombstones")
    op.drop_table("sync_tombstones")
    for table in reversed(SYNCED_TABLES):
        if table != "books":
            op.drop_table(table)  # with its indexes, constraints and trigger
    op.execute("DROP FUNCTION sync_record_tombstones()")
    op.drop_index(op.f("ix_books_series_id"), table_name="books")
    op.drop_constraint(op.f("uq_books_id_owner"), "books", type_="unique")
    for name in (
        "page_count_range",
        "current_page_range",
        "current_position_range",
        "reading_status_choices",
        "co_authors_shape",
        "custom_metadata_shape",
        "series_number_range",
        "started_at_before_finished_at",
    ):
        op.drop_constraint(op.f(f"ck_books_{name}"), "books", type_="check")
    for name, condition in (
        ("page_count_non_negative", "page_count >= 0"),
        ("current_page_non_negative", "current_page >= 0"),
        ("current_position_range", "current_position >= 0 AND current_position <= 1"),
        (
            "reading_status_valid",
            "reading_status IN ('not_started', 'reading', 'finished', 'abandoned')",
        ),
        ("co_authors_array", "jsonb_typeof(co_authors) = 'array'"),
        ("custom_metadata_object", "jsonb_typeof(custom_metadata) = 'object'"),
    ):
        op.create_check_constraint(op.f(f"ck_books_{name}"), "books", condition)
    op.alter_column(
        "books",
        "reading_status",
        existing_type=sa.String(length=11),
        type_=sa.String(length=16),
        existing_nullable=True,
    )
    op.alter_column(
        "books",
        "title",
        existing_type=sa.String(length=500),
        type_=sa.Text(),
        existing_nullable=False,
    )
    for column in ("last_read_at", "finished_at", "started_at", "series_number", "series_id"):
        op.drop_column("books", column)
