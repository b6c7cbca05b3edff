"""Writes are checked against the sync contract before they are queued: through the
repositories (account and guest database) and, for any API, at the commit of the account
database's write transactions. A refused write raises `ValidationError` with the server's
code and message, and nothing of it is written or queued."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from papyrus import contract
from papyrus.client import (
    ACCOUNT_SCHEMA,
    GUEST_SCHEMA,
    Library,
    PowerSyncDatabase,
    ValidationError,
)

OpenDb = Callable[..., PowerSyncDatabase]
USER = "11111111-1111-4111-8111-111111111111"


@pytest.fixture(params=["account", "guest"])
def library(request: pytest.FixtureRequest, open_db: OpenDb) -> Library:
    if request.param == "account":
        return Library(open_db("account.db", ACCOUNT_SCHEMA), USER)
    return Library(open_db("guest.db", GUEST_SCHEMA))


@pytest.fixture
def account(open_db: OpenDb) -> Library:
    return Library(open_db("account.db", ACCOUNT_SCHEMA), USER)


def snapshot(library: Library) -> tuple[Any, ...]:
    """Every row of every table and the upload queue: what a refused write must not change."""
    rows = tuple(
        tuple(sorted(map(str, library.database.get_all(f'SELECT * FROM "{t.name}"'))))
        for t in contract.TABLES
    )
    return rows, library.database.upload_queue_size()


@pytest.fixture
def unchanged(library: Library) -> Iterator[Callable[[], None]]:
    before: list[tuple[Any, ...]] = []

    def check() -> None:
        assert snapshot(library) == before[0]

    yield lambda: before.append(snapshot(library))
    assert len(before) <= 1
    if before:
        check()


def session(library: Library, book: str, *, ended: bool) -> str:
    values: dict[str, Any] = {
        "book_id": book,
        "started_at": "2026-03-01T10:00:00Z",
        "pages_read": 5,
    }
    if ended:
        values["ended_at"] = "2026-03-01T11:00:00Z"
    return library.sessions.add(**values).id


# -- values (validate_row) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "code", "field", "message"),
    [
        ({"rating": 7}, "invalid_value", "rating", "rating: must be an integer from 1 to 5."),
        ({"rating": 0}, "invalid_value", "rating", "rating: must be an integer from 1 to 5."),
        (
            {"page_count": -1},
            "invalid_value",
            "page_count",
            "page_count: must be an integer from 0 to 2147483647.",
        ),
        (
            {"title": ""},
            "invalid_value",
            "title",
            "title: must be a string of 1 to 500 characters.",
        ),
        ({"title": None}, "invalid_value", "title", "title: cannot be null."),
        ({"reading_status": "skimming"}, "invalid_value", "reading_status", "must be one of"),
        ({"shelf": "x"}, "unknown_field", None, "Unknown fields for books: shelf."),
    ],
)
def test_invalid_book_values_are_refused_with_the_servers_message(
    library: Library,
    unchanged: Callable[[], None],
    changes: dict[str, Any],
    code: str,
    field: str | None,
    message: str,
) -> None:
    book = library.add("Dune", rating=4)
    unchanged()
    with pytest.raises(ValidationError) as update:
        library.update(book.id, **changes)
    assert (update.value.code, update.value.field, update.value.table) == (code, field, "books")
    assert message in str(update.value) and str(update.value).startswith("books: ")
    assert update.value.row_id == book.id
    if "title" not in changes:
        with pytest.raises(ValidationError):
            library.add("Another", **changes)


def test_the_message_is_the_servers(library: Library) -> None:
    """The same function decides on both sides: the reason is what the upload would say."""
    book = library.add("Dune")
    _, problems = contract.validate_row(
        contract.table("books"), contract.PATCH, book.id, {"rating": 7}
    )
    with pytest.raises(ValidationError) as error:
        library.update(book.id, rating=7)
    assert error.value.reason == problems[0].message and error.value.code == problems[0].code


def test_a_bad_colour_is_refused(library: Library, unchanged: Callable[[], None]) -> None:
    book = library.add("Dune")
    unchanged()
    with pytest.raises(ValidationError, match="color: must look like #rrggbb") as shelf:
        library.shelves.add(name="Red", color="#ff00zz")
    assert shelf.value.field == "color"
    with pytest.raises(ValidationError, match="color: must be one of yellow, green") as mark:
        library.highlights.add(
            book_id=book.id, selected_text="x", location={"page": 1}, color="red"
        )
    assert mark.value.table == "annotations"


def test_row_rules_see_the_stored_row_under_a_patch(
    library: Library, unchanged: Callable[[], None]
) -> None:
    book = library.add("Dune", started_at="2026-03-01T10:00:00Z")
    unchanged()
    with pytest.raises(ValidationError, match="finished_at: must not be before started_at") as e:
        library.update(book.id, finished_at="2026-02-01T10:00:00+00:00")
    assert e.value.code == "invalid_value"


# -- across rows --------------------------------------------------------------------------------


def test_an_unknown_reference_is_refused(library: Library, unchanged: Callable[[], None]) -> None:
    unchanged()
    nowhere = str(uuid.uuid4())
    with pytest.raises(ValidationError, match="book_id: no such books row of yours") as error:
        library.highlights.add(book_id=nowhere, selected_text="x", location={"page": 1})
    assert error.value.code == "invalid_reference"
    with pytest.raises(ValidationError, match="series_id: no such series row"):
        library.add("Dune", series_id=nowhere)


def test_a_reference_to_a_row_written_earlier_in_the_transaction_is_accepted(
    library: Library,
) -> None:
    with library.database.write_transaction():
        book = library.add("Dune")
        mark = library.highlights.add(book_id=book.id, selected_text="x", location={"page": 1})
    assert library.highlights_of(book) == [mark]


def test_a_duplicate_tag_name_is_refused_ignoring_case(
    library: Library, unchanged: Callable[[], None]
) -> None:
    library.tags.add(name="Sci-Fi")
    other = library.tags.add(name="Fantasy")
    unchanged()
    with pytest.raises(ValidationError, match="name: another of your tags rows") as error:
        library.tags.add(name="sci-fi")
    assert error.value.code == "duplicate"
    with pytest.raises(ValidationError, match="another of your tags rows"):
        library.tags.update(other.id, name="SCI-FI")


def test_a_shelf_cycle_is_refused(library: Library) -> None:
    top = library.shelves.add(name="Top")
    middle = library.shelves.add(name="Middle", parent_shelf_id=top.id)
    bottom = library.shelves.add(name="Bottom", parent_shelf_id=middle.id)
    before = snapshot(library)
    for shelf, parent in ((top, bottom), (top, top), (middle, bottom)):
        with pytest.raises(ValidationError, match="would make this shelves row its own ancestor"):
            library.shelves.update(shelf.id, parent_shelf_id=parent.id)
    assert snapshot(library) == before
    library.shelves.update(bottom.id, parent_shelf_id=top.id)  # no cycle: fine


def test_memberships_get_the_derived_id_and_converge(library: Library) -> None:
    book, shelf = library.add("Dune"), library.shelves.add(name="Shelf")
    first = library.add_to_shelf(book, shelf)
    assert first.id == f"{book.id}:{shelf.id}"
    assert library.add_to_shelf(book.id, shelf.id) == first  # again: the same row
    assert library.shelvings.count() == 1
    tag = library.tags.add(name="Classic")
    assert library.tag(book, tag).id == f"{book.id}:{tag.id}"
    with pytest.raises(ValidationError, match="book_shelves ids are <book_id>:<shelf_id>"):
        library.shelvings.add(id=str(uuid.uuid4()), book_id=book.id, shelf_id=shelf.id)
    assert library.remove_from_shelf(book, shelf) and not library.remove_from_shelf(book, shelf)


def test_a_closed_session_cannot_be_changed_or_deleted_except_with_its_book(
    library: Library,
) -> None:
    book = library.add("Dune")
    closed = session(library, book.id, ended=True)
    still_open = session(library, book.id, ended=False)
    before = snapshot(library)
    with pytest.raises(ValidationError, match="history once ended_at is set") as change:
        library.sessions.update(closed, pages_read=6)
    assert change.value.code == "closed"
    with pytest.raises(ValidationError, match="history once ended_at is set"):
        library.sessions.delete(closed)
    assert snapshot(library) == before
    library.sessions.update(still_open, pages_read=9, ended_at="2026-03-01T12:00:00Z")  # closes
    library.delete(book.id)  # the book takes its history with it, as the server's cascade does
    assert library.sessions.count() == 0


def test_immutable_columns_cannot_change(library: Library) -> None:
    book, other = library.add("Dune"), library.add("Emma")
    mark = library.highlights.add(book_id=book.id, selected_text="x", location={"page": 1})
    with pytest.raises(ValidationError, match="book_id: cannot change once set") as error:
        library.highlights.update(mark.id, book_id=other.id)
    assert error.value.code == "immutable_field"


# -- any API: the commit check of the account database ------------------------------------------


def test_raw_sql_writes_are_checked_at_commit(account: Library) -> None:
    db = account.database
    book = account.add("Dune", rating=4)
    before = snapshot(account)
    with pytest.raises(ValidationError, match="rating: must be an integer from 1 to 5"):
        db.execute("UPDATE books SET rating = 7 WHERE id = ?", (book.id,))
    with pytest.raises(ValidationError, match="page_count: must be an integer from 0"):
        db.execute("INSERT INTO books (id, title, page_count) VALUES (uuid(), 'X', -3)")
    with pytest.raises(ValidationError, match="title: required"):
        db.execute("INSERT INTO books (id, author) VALUES (uuid(), 'Nobody')")
    with pytest.raises(ValidationError, match="id must be a UUID string"):
        db.execute("INSERT INTO books (id, title) VALUES ('b1', 'X')")
    with pytest.raises(ValidationError, match="no such books row of yours"):
        db.execute(
            "INSERT INTO bookmarks (id, book_id, location) VALUES (uuid(), ?, '{\"page\": 1}')",
            (str(uuid.uuid4()),),
        )
    with pytest.raises(ValidationError, match="another of your tags rows"):
        db.execute_batch(
            "INSERT INTO tags (id, name) VALUES (uuid(), ?)", [("Poetry",), ("POETRY",)]
        )
    assert snapshot(account) == before


def test_a_refused_commit_rolls_back_the_whole_transaction(account: Library) -> None:
    db = account.database
    before = snapshot(account)
    with pytest.raises(ValidationError, match="rating"), db.write_transaction():
        kept = account.add("Written first, through the repository")
        db.execute("INSERT INTO books (id, title) VALUES (uuid(), 'Then raw SQL')")
        db.execute("UPDATE books SET rating = 7 WHERE id = ?", (kept.id,))
    assert snapshot(account) == before


def test_raw_sql_cannot_change_or_delete_a_closed_session(account: Library) -> None:
    db = account.database
    book = account.add("Dune")
    closed = session(account, book.id, ended=True)
    before = snapshot(account)
    with pytest.raises(ValidationError, match="history once ended_at is set"):
        db.execute("UPDATE reading_sessions SET pages_read = 1 WHERE id = ?", (closed,))
    with pytest.raises(ValidationError, match="history once ended_at is set"):
        db.execute(
            "UPDATE reading_sessions SET ended_at = '2026-03-02T00:00:00Z' WHERE id = ?", (closed,)
        )
    with pytest.raises(ValidationError, match="history once ended_at is set"):
        db.execute("DELETE FROM reading_sessions WHERE id = ?", (closed,))
    assert snapshot(account) == before
    with db.write_transaction():  # with its book, in the same transaction: allowed
        db.execute("DELETE FROM reading_sessions WHERE id = ?", (closed,))
        db.execute("DELETE FROM books WHERE id = ?", (book.id,))
    assert account.sessions.count() == 0


def test_raw_sql_cannot_replace_an_immutable_column(account: Library) -> None:
    db = account.database
    book, other = account.add("Dune"), account.add("Emma")
    mark = account.bookmarks.add(book_id=book.id, location={"page": 1})
    with pytest.raises(ValidationError, match="book_id: cannot change once set"):
        db.execute("UPDATE bookmarks SET book_id = ? WHERE id = ?", (other.id, mark.id))
    with pytest.raises(ValidationError, match="book_id: cannot change once set"):
        db.execute(
            "INSERT OR REPLACE INTO bookmarks (id, book_id, location) VALUES (?, ?, ?)",
            (mark.id, other.id, '{"page": 2}'),
        )
    assert account.bookmarks.require(mark.id).book_id == book.id


def test_an_apps_own_synced_table_is_not_judged(open_db: OpenDb) -> None:
    from papyrus.client import Column, Schema, Table

    schema = Schema([*ACCOUNT_SCHEMA.tables, Table("drafts", [Column.text("body")])])
    db = open_db("own.db", schema)
    db.execute("INSERT INTO drafts (id, body) VALUES ('not a uuid', 'x')")
    assert db.upload_queue_size() == 1


# -- the opt-out --------------------------------------------------------------------------------


def test_validate_writes_false_leaves_the_server_to_judge(open_db: OpenDb) -> None:
    db = open_db("account.db", ACCOUNT_SCHEMA)
    library = Library(db, USER)
    book = library.add("Dune")
    db.validate_writes = False
    library.update(book.id, rating=99)
    db.execute("INSERT INTO books (id, title, rating) VALUES (uuid(), 'Raw', 7)")
    assert library.require(book.id).rating == 99
    assert db.upload_queue_size() == 3
    db.validate_writes = True
    with pytest.raises(ValidationError):
        db.execute("UPDATE books SET rating = 8 WHERE id = ?", (book.id,))

    other = PowerSyncDatabase(":memory:", ACCOUNT_SCHEMA, validate_writes=False)
    try:
        Library(other, USER).add("Bad", rating=0)  # the constructor takes the same switch
        assert other.upload_queue_size() == 1
    finally:
        other.close()
