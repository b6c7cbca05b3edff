"""Migration 0007_library on a database that already holds books: nothing lost, reversible."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command

from papyrus import contract
from papyrus.embedded_db import ServerInfo
from papyrus.server import migrate

BEFORE = "0004_oauth_app_pkce"
OLD_COLUMNS = (
    "id, owner_user_id, title, subtitle, author, co_authors, isbn, isbn13, publisher, language, "
    "page_count, description, cover_image_url, reading_status, current_page, current_position, "
    "current_cfi, is_favorite, rating, custom_metadata, added_at, updated_at"
)


@pytest.fixture
def old_database(pg_server: ServerInfo) -> Iterator[str]:
    name = f"o_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(pg_server.url(name), BEFORE)
    yield name
    with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_existing_books_survive_the_upgrade_and_the_downgrade(
    pg_server: ServerInfo, old_database: str
) -> None:
    conninfo = pg_server.conninfo(old_database)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        user_id = uuid.uuid4()
        conn.execute(
            "INSERT INTO users (id, email, email_verified, display_name) "
            "VALUES (%s, 'old@example.com', false, 'Old')",
            (user_id,),
        )
        conn.execute(
            f"INSERT INTO books ({OLD_COLUMNS}) SELECT gen_random_uuid(), %s, 'Title ' || n, "
            "'Sub', 'Author', '[\"A\", \"B\"]', '123', '978', 'P', 'en', n, 'D', 'https://c/x', "
            "'finished', 1, 0.5, 'epubcfi(/6/4)', n %% 2 = 0, 1 + n %% 5, '{\"k\": 1}', "
            "now() - interval '1 day', now() FROM generate_series(1, 50) AS n",
            (user_id,),
        )
        before = conn.execute(f"SELECT {OLD_COLUMNS} FROM books ORDER BY id").fetchall()

    migrate.upgrade(pg_server.url(old_database))
    with psycopg.connect(conninfo) as conn:
        assert conn.execute(f"SELECT {OLD_COLUMNS} FROM books ORDER BY id").fetchall() == before
        new = conn.execute(
            "SELECT count(*) FROM books WHERE series_id IS NULL AND series_number IS NULL "
            "AND started_at IS NULL AND finished_at IS NULL AND last_read_at IS NULL"
        ).fetchone()
        assert new == (50,)
        published = {
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = 'powersync'"
            )
        }
        assert published == {t.name for t in contract.TABLES}

    command.downgrade(migrate.alembic_config(pg_server.url(old_database)), BEFORE)
    with psycopg.connect(conninfo) as conn:
        assert conn.execute(f"SELECT {OLD_COLUMNS} FROM books ORDER BY id").fetchall() == before
        assert conn.execute("SELECT to_regclass('annotations')").fetchone() == (None,)
    migrate.upgrade(pg_server.url(old_database))
    with psycopg.connect(conninfo) as conn:
        assert conn.execute(f"SELECT {OLD_COLUMNS} FROM books ORDER BY id").fetchall() == before
