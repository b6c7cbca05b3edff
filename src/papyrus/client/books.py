"""Books, read and written straight from the local database (never cached on the side)."""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from papyrus.client.database import PowerSyncDatabase, Watch
from papyrus.client.errors import NotFoundError
from papyrus.client.schema import BOOK_COLUMNS

_JSON_FIELDS = ("co_authors", "custom_metadata")
_BOOL_FIELDS = ("is_favorite",)
EDITABLE_FIELDS = frozenset(
    c.name for c in BOOK_COLUMNS if c.name not in ("owner_user_id", "added_at", "updated_at")
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Book:
    """A plain snapshot of one row of `books`."""

    id: str
    title: str | None = None
    subtitle: str | None = None
    author: str | None = None
    co_authors: list[str] = field(default_factory=list)
    isbn: str | None = None
    isbn13: str | None = None
    publisher: str | None = None
    language: str | None = None
    page_count: int | None = None
    description: str | None = None
    cover_image_url: str | None = None
    reading_status: str | None = None
    current_page: int | None = None
    current_position: float | None = None
    current_cfi: str | None = None
    is_favorite: bool = False
    rating: int | None = None
    custom_metadata: dict[str, Any] = field(default_factory=dict)
    owner_user_id: str | None = None
    added_at: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Book:
        values = _pick(row, (f.name for f in fields(cls)))
        values["co_authors"] = _loads(row.get("co_authors"), list)
        values["custom_metadata"] = _loads(row.get("custom_metadata"), dict)
        values["is_favorite"] = bool(row.get("is_favorite"))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _pick(row: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The row's value for each name; None for a column the row lacks."""
    return {name: row.get(name) for name in names}


def _loads(text: Any, kind: type) -> Any:
    if not text:
        return kind()
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return kind()
    return value if isinstance(value, kind) else kind()


def _encode(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _JSON_FIELDS:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if name in _BOOL_FIELDS:
        return 1 if value else 0
    return value


class ReadingStatus(StrEnum):
    """The values the server accepts; anything else would be rejected at upload."""

    not_started = "not_started"
    reading = "reading"
    finished = "finished"
    abandoned = "abandoned"


class BookSort(StrEnum):
    title = "title"  # type: ignore[assignment]  # the column's name; shadows str.title
    author = "author"
    added_at = "added_at"
    updated_at = "updated_at"
    rating = "rating"
    reading_status = "reading_status"


@dataclass(frozen=True)
class BookFilter:
    reading_status: str | None = None
    favorite: bool | None = None
    author: str | None = None
    search: str | None = None
    sort: BookSort = BookSort.title
    descending: bool = False
    limit: int | None = None
    offset: int = 0

    def sql(self) -> tuple[str, list[Any]]:
        where, params = self._where()
        sql = "SELECT * FROM books" + where
        order = "DESC" if self.descending else "ASC"
        column = BookSort(self.sort).value
        sql += f" ORDER BY {column} IS NULL, {column} COLLATE NOCASE {order}, id"
        if self.limit is not None or self.offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if self.limit is None else int(self.limit), int(self.offset)]
        return sql, params

    def count_sql(self) -> tuple[str, list[Any]]:
        """How many books match, ignoring sort, limit and offset."""
        where, params = self._where()
        return "SELECT count(*) AS n FROM books" + where, params

    def _where(self) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
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
        return (" WHERE " + " AND ".join(where) if where else ""), params


class BookRepository:
    """Adds, edits, deletes, reads and watches books in one local database.

    In the account database every write is queued for upload; in the guest database the table
    is local-only and nothing leaves the device.
    """

    def __init__(self, database: PowerSyncDatabase, owner_user_id: str | None = None) -> None:
        self.database = database
        self.owner_user_id = owner_user_id

    def add(self, title: str, **values: Any) -> Book:
        _check_fields(values)
        now = now_iso()
        row = {name: _encode(name, value) for name, value in values.items()}
        row.update(title=title, owner_user_id=self.owner_user_id, added_at=now, updated_at=now)
        book_id = str(values.pop("id", None) or uuid.uuid4())
        row.pop("id", None)
        names = ["id", *row]
        placeholders = ", ".join("?" for _ in names)
        self.database.execute(
            f"INSERT INTO books ({', '.join(names)}) VALUES ({placeholders})",
            (book_id, *row.values()),
        )
        return self._require(book_id)

    def update(self, book_id: str, **changes: Any) -> Book:
        _check_fields(changes)
        changes.pop("id", None)
        with self.database.write_transaction():
            self._require(book_id)
            if changes:
                row = {name: _encode(name, value) for name, value in changes.items()}
                row["updated_at"] = now_iso()
                assignments = ", ".join(f"{name} = ?" for name in row)
                self.database.execute(
                    f"UPDATE books SET {assignments} WHERE id = ?", (*row.values(), book_id)
                )
            return self._require(book_id)

    def delete(self, book_id: str) -> None:
        with self.database.write_transaction():
            self._require(book_id)
            self.database.execute("DELETE FROM books WHERE id = ?", (book_id,))

    def get(self, book_id: str) -> Book | None:
        row = self.database.get_optional("SELECT * FROM books WHERE id = ?", (book_id,))
        return Book.from_row(row) if row else None

    def list(self, query: BookFilter | None = None, **filters: Any) -> list[Book]:
        query = query or BookFilter(**filters)
        sql, params = query.sql()
        return [Book.from_row(r) for r in self.database.get_all(sql, tuple(params))]

    def count(self, query: BookFilter | None = None, **filters: Any) -> int:
        """How many books match (all of them without a filter); limit and offset are ignored."""
        sql, params = (query or BookFilter(**filters)).count_sql()
        row = self.database.get_optional(sql, tuple(params))
        return int(row["n"]) if row else 0

    def watch(
        self, query: BookFilter | None = None, **filters: Any
    ) -> Watch[builtins.list[Book]]:  # `list` here is the method above
        """Emits the list now, then a fresh list after every change to `books`, local or
        synced. Iterate it, or call `next(timeout)`; close it when done."""
        query = query or BookFilter(**filters)
        return self.database.watch(lambda: self.list(query), ["books"])

    def _require(self, book_id: str) -> Book:
        book = self.get(book_id)
        if book is None:
            raise NotFoundError(f"no book with id {book_id}")
        return book


def _check_fields(values: dict[str, Any]) -> None:
    unknown = set(values) - EDITABLE_FIELDS - {"id"}
    if unknown:
        raise ValueError(f"unknown book fields: {', '.join(sorted(unknown))}")


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
