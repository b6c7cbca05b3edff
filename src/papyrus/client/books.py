"""Books, read and written straight from the local database (never cached on the side)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from papyrus.client.records import Book
from papyrus.client.repository import Query, Repository, now_iso
from papyrus.contract import ID, OWNER, Table, table

if TYPE_CHECKING:
    from papyrus.client.database import PowerSyncDatabase

__all__ = [
    "Book",
    "BookFilter",
    "BookRepository",
    "BookSort",
    "DataStore",
    "ReadingStatus",
    "RejectionRecord",
    "now_iso",
]


# The declared choices, so the values offered can never drift from what the server accepts.
# (Built at import: type checkers see the enum but not its members; `ReadingStatus("reading")`.)
ReadingStatus = StrEnum(  # type: ignore[misc]  # members come from the declaration
    "ReadingStatus", [(s, s) for s in table("books").column("reading_status").choices]
)
ReadingStatus.__doc__ = "A book's reading status: the values the server accepts."


class BookSort(StrEnum):
    title = "title"  # type: ignore[assignment]  # the column's name; shadows str.title
    author = "author"
    added_at = "added_at"
    updated_at = "updated_at"
    rating = "rating"
    reading_status = "reading_status"


@dataclass(frozen=True)
class BookFilter(Query):
    """A `Query` with the filters a library list needs: status, favourites, author, and a
    search in title, author and subtitle (or an exact ISBN-13)."""

    sort: str | None = BookSort("title")
    reading_status: str | None = None
    favorite: bool | None = None
    author: str | None = None

    def conditions(self, table: Table) -> tuple[list[str], list[Any]]:
        where, params = Query(where=self.where).conditions(table)
        if self.reading_status is not None:
            where.append("reading_status = ?")
            params.append(self.reading_status)
        if self.favorite is not None:
            where.append("COALESCE(is_favorite, 0) = ?")
            params.append(1 if self.favorite else 0)
        if self.author is not None:
            where.append("author LIKE ?")
            params.append(f"%{self.author}%")
        if self.search:
            where.append("(title LIKE ? OR author LIKE ? OR subtitle LIKE ? OR isbn13 = ?)")
            params += [f"%{self.search}%"] * 3 + [self.search]
        return where, params


class BookRepository(Repository[Book]):
    """Adds, edits, deletes, reads and watches books in one local database: the generic
    `Repository` with a title first and `BookFilter` for lists (its filters, or any column's
    value, by keyword).

    In the account database every write is queued for upload; in the guest database the table
    is local-only and nothing leaves the device.
    """

    def __init__(self, database: PowerSyncDatabase, owner_user_id: str | None = None) -> None:
        super().__init__(database, Book, owner_user_id)

    def add(self, title: str, **values: Any) -> Book:  # type: ignore[override]  # needs a title
        """A new book (a book always has a title)."""
        return super().add(title=title, **values)

    def _query(self, query: Query | None, filters: Mapping[str, Any]) -> Query:
        if query is not None:
            if filters:
                raise TypeError("give a query or filters, not both")
            return query
        known = {f.name for f in fields(BookFilter)} - {"where"}
        where = {k: v for k, v in filters.items() if k not in known}
        for name in where:
            if name not in (ID, OWNER):
                self.table.column(name)  # KeyError for a column books do not have
        return BookFilter(where=where, **{k: v for k, v in filters.items() if k in known})


@dataclass(frozen=True)
class RejectionRecord:
    id: str
    op_id: int | None
    row_id: str | None
    row_type: str | None
    op: str | None
    code: str | None
    message: str | None
    rejected_at: str | None

    @property
    def dropped(self) -> bool:
        """A late write to a row deleted meanwhile (the server applied the rest of its
        transaction), rather than a refused transaction."""
        return self.code in DROPPED_CODES


DROPPED_CODES = frozenset({"row_deleted", "parent_deleted"})
"""The codes of writes the server dropped because their row (or its parent) was deleted."""


class DataStore:
    """Read-only snapshots as plain objects, for callers that do not want a repository."""

    def __init__(self, database: PowerSyncDatabase) -> None:
        self.database = database

    def books(self, **filters: Any) -> list[Book]:
        return BookRepository(self.database).list(**filters)

    def book(self, book_id: str) -> Book | None:
        return BookRepository(self.database).get(book_id)

    def rejections(self) -> list[RejectionRecord]:
        if not any(t.visible_name == "upload_rejections" for t in self.database.schema.tables):
            return []  # the guest database never uploads, so it has no such table
        rows = self.database.get_all("SELECT * FROM upload_rejections ORDER BY rejected_at, op_id")
        return [RejectionRecord(**_pick(r, RejectionRecord.__dataclass_fields__)) for r in rows]


def _pick(row: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The row's value for each name; None for a column the row lacks."""
    return {name: row.get(name) for name in names}
