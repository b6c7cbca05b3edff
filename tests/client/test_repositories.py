"""The generic repository, for every declared table, in the account and the guest database.

Parametrised from the declarations (rows come from `tests.server.sync.rows`, which builds a
valid row of any table and the rows it references), so a new table is covered without new
test code: add, get, list, count, update, watch and delete, what a delete takes with it, and
what each database queues for upload.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from papyrus import contract
from papyrus.client import (
    ACCOUNT_SCHEMA,
    GUEST_SCHEMA,
    RECORDS,
    Library,
    PowerSyncDatabase,
    Record,
)
from papyrus.client.records import record
from papyrus.client.validation import same
from papyrus.contract import OnDelete
from tests.server.sync.rows import Row, chain, patchable, value

OpenDb = Callable[..., PowerSyncDatabase]
USER = "11111111-1111-4111-8111-111111111111"
TABLES = [t.name for t in contract.TABLES]
REFERENCES = [(t.name, c.name) for t in contract.TABLES for c in t.references]


@pytest.fixture(params=["account", "guest"])
def library(request: pytest.FixtureRequest, open_db: OpenDb) -> Library:
    if request.param == "account":
        return Library(open_db("account.db", ACCOUNT_SCHEMA), USER)
    return Library(open_db("guest.db", GUEST_SCHEMA))


def add_rows(library: Library, rows: list[Row]) -> list[Record]:
    """Each row through its table's repository (a membership's id is derived again)."""
    added = []
    for row in rows:
        repository = library.repository(row.table.name)
        existing = repository.get(row.id)
        added.append(existing or repository.add(id=row.id, **row.data))
    return added


def queued(library: Library) -> list[tuple[str, str, str]]:
    batch = library.database.get_crud_batch(10_000)
    return [] if batch is None else [(str(e.op), e.table, e.id) for e in batch.crud]


def test_every_declared_table_has_a_record_and_a_repository(open_db: OpenDb) -> None:
    library = Library(open_db())
    assert [r.table.name for r in RECORDS] == TABLES
    assert [r.table.name for r in library.repositories()] == TABLES


def test_a_record_that_drifts_from_its_declaration_is_refused_at_import() -> None:
    from dataclasses import dataclass

    with pytest.raises(TypeError, match="missing \\['color'"):

        @record(contract.table("tags"), "tag", "tags")
        @dataclass(frozen=True)
        class Tag(Record):
            id: str
            owner_user_id: str | None = None
            name: str | None = None
            created_at: str | None = None
            updated_at: str | None = None

    with pytest.raises(TypeError, match="wrong types \\['name'\\]"):

        @record(contract.table("tags"), "tag", "tags")
        @dataclass(frozen=True)
        class BadTag(Record):
            id: str
            owner_user_id: str | None = None
            name: int | None = None
            color: str | None = None
            created_at: str | None = None
            updated_at: str | None = None


@pytest.mark.parametrize("table_name", TABLES)
def test_round_trip(library: Library, table_name: str) -> None:
    table = contract.table(table_name)
    rows = chain(table)
    *_, mine = add_rows(library, rows)
    expected, problems = contract.validate_row(table, contract.PUT, rows[-1].id, rows[-1].data)
    assert problems == []
    repository = library.repository(table_name)
    for column in table.writable_columns:
        assert same(
            column, contract.to_local(column, getattr(mine, column.name)), expected.get(column.name)
        ), column.name
    for column in table.columns:
        if column.server_set:
            assert getattr(mine, column.name), column.name  # stamped locally too
    assert mine.owner_user_id == library.owner_user_id
    assert repository.get(mine.id) == mine
    assert mine in repository.list()
    assert repository.count() == len([r for r in rows if r.table is table])

    column = patchable(table)
    if column is not None:
        new = value(column, 2)
        if new == rows[-1].data.get(column.name):
            new = value(column, 0)
        changed = repository.update(mine.id, **{column.name: new})
        assert same(column, contract.to_local(column, getattr(changed, column.name)), new)
        assert repository.list(**{column.name: new}) == [changed]

    with repository.watch() as watch:
        assert mine.id in [r.id for r in watch.next(timeout=5)]
        repository.delete(mine.id)
        assert mine.id not in [r.id for r in watch.next(timeout=5)]
    assert repository.get(mine.id) is None

    ops = queued(library)
    if library.owner_user_id is None:  # the guest library: local-only, nothing to upload
        assert ops == []
    else:
        assert ("PUT", table_name, mine.id) in ops and ops[-1] == ("DELETE", table_name, mine.id)


@pytest.mark.parametrize(("table_name", "column_name"), REFERENCES)
def test_a_delete_takes_what_depends_on_it(
    library: Library, table_name: str, column_name: str
) -> None:
    table = contract.table(table_name)
    column = table.column(column_name)
    rows = chain(table)
    added = add_rows(library, rows)
    child = added[-1]
    parent_id = getattr(child, column_name)
    parent_table = column.references or ""
    library.repository(parent_table).delete(parent_id)
    after = library.repository(table_name).get(child.id)
    if column.on_delete is OnDelete.CASCADE:
        assert after is None
    else:
        assert after is not None and getattr(after, column_name) is None
    if library.owner_user_id is not None:  # the server is told the same, children first
        ops = queued(library)
        last = ops.index(("DELETE", parent_table, parent_id))
        expected = "DELETE" if column.on_delete is OnDelete.CASCADE else "PATCH"
        assert (expected, table_name, child.id) in ops[:last]


def test_lists_filter_search_sort_and_page(library: Library) -> None:
    for name in ("Classics", "sci-fi", "Poetry"):
        library.shelves.add(name=name, description=f"about {name.lower()}")
    assert [s.name for s in library.shelves.list()] == ["Classics", "Poetry", "sci-fi"]
    assert [s.name for s in library.shelves.list(sort="name", descending=True)] == [
        "sci-fi",
        "Poetry",
        "Classics",
    ]
    assert [s.name for s in library.shelves.list(search="POET")] == ["Poetry"]
    assert [s.name for s in library.shelves.list(limit=1, offset=1)] == ["Poetry"]
    assert library.shelves.count(limit=1) == 3  # counts ignore paging
    assert library.shelves.count(search="about") == 3
    assert library.shelves.resolve("POETRY").name == "Poetry"  # by name, ignoring case


def test_ids_resolve_by_prefix(library: Library) -> None:
    book = library.add("Dune")
    assert library.resolve(book.id[:6]) == book
    assert library.resolve(book.id) == book
    with pytest.raises(Exception, match="no book"):
        library.resolve("zzzz")


def test_rows_are_named_by_their_label_column(library: Library) -> None:
    book = library.add("Dune")
    mark = library.bookmarks.add(book_id=book.id, location={"page": 1}, label="Arrakis")
    assert (book.display_name, mark.display_name) == ("Dune", "Arrakis")
    assert library.bookmarks.resolve("arrakis") == mark
    unnamed = library.bookmarks.add(book_id=book.id, location={"page": 2})
    assert unnamed.display_name == unnamed.id
