"""A client released before the reading library keeps syncing books through today's stack.

Its local schema is the one from before: `books` without `series_id`, `series_number`,
`started_at`, `finished_at` and `last_read_at`, and no other synced table. The sync service
still sends it every row of every table; the PowerSync core keeps rows of tables its schema does
not name in `ps_untyped` (kept, not shown), so the books must come out right and its uploads,
which know nothing of the new columns, must apply without touching them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from papyrus import contract
from papyrus.client import AuthProvider, Column, Index, Schema, Table
from papyrus.client.schema import UPLOAD_REJECTIONS
from papyrus.contract import ID, OWNER
from tests.client.conftest import eventually
from tests.client.library import (
    PASSWORD,
    local_rejections,
    local_rows,
    normal_value,
    server_rejections,
    server_rows,
    write,
)
from tests.client.stack import Stack
from tests.server.sync.rows import Row, chain

BOOKS = contract.table("books")
NEW_BOOK_COLUMNS = ("series_id", "series_number", "started_at", "finished_at", "last_read_at")

# The books table of the client schema before the reading library, column for column.
OLD_BOOK_COLUMNS = [
    *(
        Column.text(name)
        for name in (
            "owner_user_id",
            "title",
            "subtitle",
            "author",
            "co_authors",
            "isbn",
            "isbn13",
            "publisher",
            "language",
            "description",
            "cover_image_url",
            "reading_status",
        )
    ),
    Column.integer("page_count"),
    Column.integer("current_page"),
    Column.real("current_position"),
    Column.text("current_cfi"),
    Column.integer("is_favorite"),
    Column.integer("rating"),
    Column.text("custom_metadata"),
    Column.text("added_at"),
    Column.text("updated_at"),
]
OLD_SCHEMA = Schema(
    [
        Table(
            "books",
            OLD_BOOK_COLUMNS,
            [Index("by_title", ["title"]), Index("by_updated", ["updated_at"])],
        ),
        UPLOAD_REJECTIONS,
    ]
)
OLD_NAMES = [c.name for c in OLD_BOOK_COLUMNS if c.name != OWNER]


def old_books(device: AuthProvider) -> dict[str, dict[str, Any]]:
    """The old client's books, normalised like the server's."""
    return {
        row[ID]: {
            OWNER: row[OWNER],
            **{n: normal_value(BOOKS.column(n), row[n]) for n in OLD_NAMES},
        }
        for row in device.database.get_all("SELECT * FROM books")
    }


def server_books(stack: Stack, owner: str) -> dict[str, dict[str, Any]]:
    return {key[1]: row for key, row in server_rows(stack, owner).items() if key[0] == BOOKS.name}


def as_old(row: dict[str, Any]) -> dict[str, Any]:
    return {OWNER: row[OWNER], **{n: row[n] for n in OLD_NAMES}}


def test_a_books_only_client_keeps_syncing_books(stack: Stack) -> None:
    email = f"reader-{uuid.uuid4().hex[:8]}@example.com"
    new = stack.client("new")
    new.register(email, PASSWORD, "Reader")
    assert new.database.wait_for_first_sync(20)
    assert new.user is not None
    owner = new.user.id

    # A library only new clients know: rows in every table, books using the new columns.
    library: list[Row] = [row for table in contract.TABLES for row in chain(table, closed=True)]
    for n, row in enumerate(library):
        if row.table.name == "tags":  # unique per reader
            row.data["name"] = f"tag {n}"
    write(new, library)
    counts = {t.name: sum(1 for r in library if r.table is t) for t in contract.TABLES}
    eventually(lambda: len(server_rows(stack, owner)) == len(library))
    stored = server_books(stack, owner)
    assert all(stored[book][c] is not None for book in stored for c in NEW_BOOK_COLUMNS)

    old = stack.client("old", schema=OLD_SCHEMA, validate_writes=False)
    old.sign_in(email, PASSWORD)
    assert old.database.wait_for_first_sync(20)
    assert old_books(old) == {book: as_old(row) for book, row in stored.items()}
    visible = {r["name"] for r in old.database.get_all("SELECT name FROM sqlite_master")}
    assert "shelves" not in visible and "annotations" not in visible
    untyped = old.database.get_all("SELECT type, count(*) AS n FROM ps_untyped GROUP BY type")
    assert {r["type"]: r["n"] for r in untyped} == {
        name: n for name, n in counts.items() if name != BOOKS.name
    }

    # The old client adds a book and edits one that uses the new columns, as its code did:
    # plain SQL over the columns it knows.
    now = datetime.now(UTC).isoformat()
    added = str(uuid.uuid4())
    edited = next(iter(stored))
    with old.database.write_transaction() as db:
        db.execute(
            "INSERT INTO books (id, owner_user_id, title, author, co_authors, is_favorite,"
            " rating, reading_status, custom_metadata, added_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                added,
                owner,
                "Emma",
                "Jane Austen",
                '["A. Editor"]',
                1,
                4,
                "reading",
                '{"from": "old client"}',
                now,
                now,
            ),
        )
        db.execute("UPDATE books SET rating = ?, updated_at = ? WHERE id = ?", (2, now, edited))

    def uploaded() -> bool:
        books = server_books(stack, owner)
        return added in books and books[edited]["rating"] == 2

    eventually(uploaded)
    books = server_books(stack, owner)
    emma = books[added]
    assert (emma["title"], emma["author"], emma["co_authors"]) == (
        "Emma",
        "Jane Austen",
        ["A. Editor"],
    )
    assert (emma["is_favorite"], emma["rating"], emma["reading_status"]) == (True, 4, "reading")
    assert all(emma[c] is None for c in NEW_BOOK_COLUMNS)
    # The edit changed the rating alone: the new columns the old client cannot see are kept.
    assert {c: books[edited][c] for c in NEW_BOOK_COLUMNS} == {
        c: stored[edited][c] for c in NEW_BOOK_COLUMNS
    }
    assert local_rejections(old) == [] and server_rejections(old) == []

    # Both clients end up with the server's books: the new one with every column.
    eventually(
        lambda: old_books(old) == {b: as_old(r) for b, r in server_books(stack, owner).items()}
    )
    eventually(
        lambda: (
            {k[1]: r for k, r in local_rows(new.database).items() if k[0] == BOOKS.name}
            == server_books(stack, owner)
        )
    )
    assert len(server_rows(stack, owner)) == len(library) + 1
