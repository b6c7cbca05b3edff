"""One frozen dataclass per synced table: what a repository returns for a row.

Written out (so type checkers and editors know every field) and checked against the table's
declaration when the module is imported: `@record(table)` refuses a class whose fields are not
exactly `id`, `owner_user_id` and the declared columns, or whose types differ from what the
declared logical types read back as (`papyrus.contract.from_local`). A column added to a
declaration therefore fails every import of the client until its record has it too.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar, Self, TypeVar

from papyrus import contract
from papyrus.contract import ID, OWNER, JsonObject, Location, StringList, Table, Type

_PYTHON_TYPES: dict[Type, type] = {
    Type.TEXT: str,
    Type.ID: str,
    Type.TIMESTAMP: str,
    Type.DATE: str,
    Type.INTEGER: int,
    Type.REAL: float,
    Type.BOOLEAN: bool,
}


class Record:
    """Base of the row classes: conversion from and to the local database's encoding."""

    table: ClassVar[Table]
    # Class-level settings; their names must not be column names (a bookmark has a `label`).
    label_column: ClassVar[str | None] = None
    """The column that names a row for people (a title, a name), used to find rows by name and
    in messages; None when rows have no name."""
    sort_column: ClassVar[str] = ID
    """The column lists are ordered by unless told otherwise."""
    noun: ClassVar[str] = "row"
    nouns: ClassVar[str] = "rows"

    id: str

    # Every record class is a dataclass: declared here so `dataclasses.fields` accepts any record.
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    _readers: ClassVar[tuple[tuple[str, Callable[[Any], Any]], ...]] = ()

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        """A record from a row of the table's view (SQLite's encoding)."""
        return cls(**{name: read(row.get(name)) for name, read in cls._readers})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def display_name(self) -> str:
        """How the row is shown to people: its label, or its id."""
        column = self.label_column
        value = getattr(self, column, None) if column else None
        return str(value) if value else self.id


def _reader(column: contract.Column) -> Callable[[Any], Any]:
    """How a column's value is read from SQLite: booleans and JSON decoded, NULL as the
    column's default for booleans and as an empty list or object for JSON lists and objects
    (as `Book` always had), everything else as stored."""
    if column.type is Type.BOOLEAN:
        default = bool(column.default) if column.default is not None else None
        return lambda value: default if value is None else bool(value)
    if column.type is Type.JSON:
        empty: Callable[[], Any] = (
            list
            if isinstance(column.json, StringList)
            else dict
            if isinstance(column.json, JsonObject)
            else lambda: None
        )

        def read_json(value: Any) -> Any:
            parsed = contract.from_local(column, value)
            return empty() if parsed is None else parsed

        return read_json
    return _same


def _same(value: Any) -> Any:
    return value


R = TypeVar("R", bound=Record)


def record(
    table: Table, noun: str, nouns: str, *, label: str | None = None, sort: str = ID
) -> Callable[[type[R]], type[R]]:
    """Binds a record class to its table, refusing any drift from the declaration. `noun` and
    `nouns` name one row and several in messages."""

    def bind(cls: type[R]) -> type[R]:
        hints = typing.get_type_hints(cls)
        names = [f.name for f in fields(cls)]
        expected = [ID, OWNER, *table.column_names]
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        wrong = [
            n for n in table.column_names if n in names and not _accepts(hints[n], table.column(n))
        ]
        if missing or extra or wrong:
            raise TypeError(
                f"{cls.__name__} does not match the {table.name} declaration: missing "
                f"{missing}, undeclared {extra}, wrong types {wrong}"
            )
        settings = {"table", "label_column", "sort_column", "noun", "nouns"}
        if settings & set(expected):
            raise TypeError(f"{table.name}: a column is named like a record setting")
        for name in (label, sort):
            if name is not None and name not in expected:
                raise TypeError(f"{cls.__name__}: {name!r} is not a column of {table.name}")
        cls.table = table
        cls._readers = tuple(
            (name, _same if name in (ID, OWNER) else _reader(table.column(name))) for name in names
        )
        cls.label_column = label
        cls.sort_column = sort
        cls.noun, cls.nouns = noun, nouns
        return cls

    return bind


def _accepts(hint: Any, column: contract.Column) -> bool:
    """Whether a field's type is what the column reads back as (optional or not)."""
    options = set(typing.get_args(hint)) if _is_union(hint) else {hint}
    options.discard(type(None))
    if column.type is Type.JSON:
        origins = {typing.get_origin(o) or o for o in options}
        if isinstance(column.json, StringList):
            return origins == {list}
        if isinstance(column.json, JsonObject | Location):
            return origins == {dict}
        return False
    return options == {_PYTHON_TYPES[column.type]}


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


@record(contract.table("series"), "series", "series", label="name", sort="name")
@dataclass(frozen=True)
class Series(Record):
    id: str
    owner_user_id: str | None = None
    name: str | None = None
    author: str | None = None
    description: str | None = None
    total_books: int | None = None
    created_at: str | None = None
    updated_at: str | None = None


@record(contract.table("books"), "book", "books", label="title", sort="title")
@dataclass(frozen=True)
class Book(Record):
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
    series_id: str | None = None
    series_number: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    last_read_at: str | None = None
    owner_user_id: str | None = None
    added_at: str | None = None
    updated_at: str | None = None


@record(contract.table("shelves"), "shelf", "shelves", label="name", sort="name")
@dataclass(frozen=True)
class Shelf(Record):
    id: str
    owner_user_id: str | None = None
    name: str | None = None
    description: str | None = None
    color: str | None = None
    parent_shelf_id: str | None = None
    sort_order: int | None = None
    created_at: str | None = None
    updated_at: str | None = None


@record(contract.table("tags"), "tag", "tags", label="name", sort="name")
@dataclass(frozen=True)
class Tag(Record):
    id: str
    owner_user_id: str | None = None
    name: str | None = None
    color: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


@record(contract.table("book_shelves"), "book on a shelf", "books on shelves", sort="added_at")
@dataclass(frozen=True)
class BookShelf(Record):
    """A book on a shelf; the id is `<book_id>:<shelf_id>`."""

    id: str
    owner_user_id: str | None = None
    book_id: str | None = None
    shelf_id: str | None = None
    sort_order: int | None = None
    added_at: str | None = None


@record(contract.table("book_tags"), "tag of a book", "tags of books", sort="added_at")
@dataclass(frozen=True)
class BookTag(Record):
    """A tag on a book; the id is `<book_id>:<tag_id>`."""

    id: str
    owner_user_id: str | None = None
    book_id: str | None = None
    tag_id: str | None = None
    added_at: str | None = None


@record(
    contract.table("annotations"),
    "highlight",
    "highlights",
    label="selected_text",
    sort="created_at",
)
@dataclass(frozen=True)
class Highlight(Record):
    """A row of `annotations`: selected text at a location, in a colour, with a note."""

    id: str
    owner_user_id: str | None = None
    book_id: str | None = None
    selected_text: str | None = None
    color: str | None = None
    location: dict[str, Any] | None = None
    note: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


@record(contract.table("notes"), "note", "notes", label="title", sort="updated_at")
@dataclass(frozen=True)
class Note(Record):
    id: str
    owner_user_id: str | None = None
    book_id: str | None = None
    title: str | None = None
    content: str | None = None
    location: dict[str, Any] | None = None
    pinned: bool = False
    created_at: str | None = None
    updated_at: str | None = None


@record(contract.table("bookmarks"), "bookmark", "bookmarks", label="label", sort="created_at")
@dataclass(frozen=True)
class Bookmark(Record):
    id: str
    owner_user_id: str | None = None
    book_id: str | None = None
    location: dict[str, Any] | None = None
    label: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


@record(
    contract.table("reading_sessions"), "reading session", "reading sessions", sort="started_at"
)
@dataclass(frozen=True)
class ReadingSession(Record):
    """One stretch of reading; history once `ended_at` is set."""

    id: str
    owner_user_id: str | None = None
    book_id: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    start_position: float | None = None
    end_position: float | None = None
    pages_read: int | None = None
    device_label: str | None = None
    created_at: str | None = None


@record(contract.table("reading_goals"), "reading goal", "reading goals", sort="period_start")
@dataclass(frozen=True)
class ReadingGoal(Record):
    id: str
    owner_user_id: str | None = None
    kind: str | None = None
    target: int | None = None
    period: str | None = None
    period_start: str | None = None
    active: bool = True
    created_at: str | None = None
    updated_at: str | None = None


RECORDS: tuple[type[Record], ...] = (
    Series,
    Book,
    Shelf,
    Tag,
    BookShelf,
    BookTag,
    Highlight,
    Note,
    Bookmark,
    ReadingSession,
    ReadingGoal,
)
"""A record class for every declared table, in the declarations' order."""

RECORDS_BY_TABLE: dict[str, type[Record]] = {r.table.name: r for r in RECORDS}
