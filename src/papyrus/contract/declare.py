"""The vocabulary synced tables are declared in: `Table`, `Column` and the rules between rows.

Plain data on purpose: this package imports nothing from the server, the client or SQLAlchemy,
so the server's models and upload SQL, the sync config, the client schema and the client's
write-time validation can all be derived from (or checked against) the same declarations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any


class Type(StrEnum):
    """A column's logical type; each side maps it to its own storage."""

    TEXT = "text"  # PostgreSQL varchar(n) / text; SQLite TEXT
    INTEGER = "integer"  # int4; SQLite INTEGER
    REAL = "real"  # double precision; SQLite REAL
    BOOLEAN = "boolean"  # boolean; SQLite INTEGER 0/1 (uploads may send 0/1)
    JSON = "json"  # jsonb; SQLite TEXT holding JSON (uploads may send the text)
    TIMESTAMP = "timestamp"  # timestamptz; SQLite TEXT, ISO 8601 with an offset or Z
    DATE = "date"  # date; SQLite TEXT, YYYY-MM-DD
    ID = "id"  # uuid; SQLite TEXT


class Stamp(StrEnum):
    """A time the server keeps (clients may hold and upload it; the upload is ignored)."""

    CREATED = "created"  # set when the row is created
    UPDATED = "updated"  # set when the row is created and on every change


class OnDelete(StrEnum):
    """What happens to a row when the row its reference points at is deleted."""

    CASCADE = "cascade"  # it is deleted too (highlights of a deleted book)
    SET_NULL = "set_null"  # the reference is cleared (books of a deleted series)


@dataclass(frozen=True)
class StringList:
    """JSON array of strings (for example a book's co-authors)."""

    max_items: int
    max_length: int


@dataclass(frozen=True)
class JsonObject:
    """Any JSON object, bounded in encoded size and nesting (app-defined metadata)."""

    max_bytes: int
    max_depth: int = 20


@dataclass(frozen=True)
class Location:
    """A place in a book: `{"cfi"?: str, "page"?: int, "fraction"?: 0..1}`, at least one key."""

    max_cfi_length: int = 4096


JsonShape = StringList | JsonObject | Location


@dataclass(frozen=True)
class Column:
    """One client-visible column.

    `required`: never NULL; a PUT must carry it unless `default` is set. `length` bounds text in
    characters, `range` bounds numbers (inclusive). `references` names a synced table whose row
    (owned by the same user) the value must identify. `immutable` columns keep the value the
    row was created with. `stamp` columns are written by the server only (an uploaded value is
    accepted and ignored, because SDKs upload every column they hold).
    """

    name: str
    type: Type
    required: bool = False
    default: Any = None
    length: tuple[int, int] | None = None
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    json: JsonShape | None = None
    references: str | None = None
    on_delete: OnDelete = OnDelete.CASCADE
    immutable: bool = False
    stamp: Stamp | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.name) or self.name in RESERVED_COLUMNS:
            raise ValueError(f"invalid column name: {self.name!r}")
        if self.length is not None and self.type is not Type.TEXT:
            raise ValueError(f"{self.name}: length applies to text columns")
        if self.range is not None and self.type not in (Type.INTEGER, Type.REAL):
            raise ValueError(f"{self.name}: range applies to numeric columns")
        if (self.choices or self.pattern) and self.type is not Type.TEXT:
            raise ValueError(f"{self.name}: choices and pattern apply to text columns")
        if self.type is Type.TEXT and self.length is None and not self.choices:
            raise ValueError(f"{self.name}: every text column needs a length bound or choices")
        if (self.json is None) != (self.type is not Type.JSON):
            raise ValueError(f"{self.name}: json columns (and only they) declare a shape")
        if (self.references is None) != (self.type is not Type.ID):
            raise ValueError(f"{self.name}: id columns (and only they) reference a table")
        if self.on_delete is OnDelete.SET_NULL and self.required:
            raise ValueError(f"{self.name}: a required reference cannot be set to null")
        if self.stamp is not None and self.type is not Type.TIMESTAMP:
            raise ValueError(f"{self.name}: only timestamps are stamped by the server")

    @property
    def max_length(self) -> int | None:
        if self.length is not None:
            return self.length[1]
        return max(map(len, self.choices)) if self.choices else None

    @property
    def server_set(self) -> bool:
        return self.stamp is not None


@dataclass(frozen=True)
class Unique:
    """No two rows of one user share these columns' values (`case_insensitive` for text)."""

    columns: tuple[str, ...]
    case_insensitive: bool = False
    name: str = ""


@dataclass(frozen=True)
class Before:
    """Row rule: when both are set, `earlier` must not be after `later` (timestamps, dates,
    numbers)."""

    earlier: str
    later: str


@dataclass(frozen=True)
class Index:
    """An index of the local database. (The server indexes the owner and every reference.)"""

    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """One synced table. Every table also has `id` and `owner_user_id` (see `ID`, `OWNER`).

    `id_from`: the row id is derived from two reference columns as `"<a>:<b>"`, so two devices
    that create the same pair offline converge on one row. `closed_by`: once that column is set,
    the row is history; clients can no longer change or delete it (the server still deletes it
    with its parent). `acyclic`: a self-reference that must never form a cycle.
    """

    name: str
    doc: str
    columns: tuple[Column, ...]
    id_from: tuple[str, str] | None = None
    unique: tuple[Unique, ...] = ()
    checks: tuple[Before, ...] = ()
    closed_by: str | None = None
    acyclic: str | None = None
    indexes: tuple[Index, ...] = ()

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.name):
            raise ValueError(f"invalid table name: {self.name!r}")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: a column is declared twice")
        known = set(names)
        mentioned: list[str] = []
        if self.id_from:
            mentioned += self.id_from
            for name in self.id_from:
                column = self.column(name)
                if column.type is not Type.ID or not column.required or not column.immutable:
                    raise ValueError(f"{self.name}.{name}: id_from needs required immutable ids")
        for unique in self.unique:
            mentioned += unique.columns
        for check in self.checks:
            mentioned += (check.earlier, check.later)
        for index in self.indexes:
            mentioned += [c for c in index.columns if c not in RESERVED_COLUMNS]
        if self.closed_by:
            mentioned.append(self.closed_by)
        if self.acyclic:
            mentioned.append(self.acyclic)
            if self.column(self.acyclic).references != self.name:
                raise ValueError(f"{self.name}.{self.acyclic}: acyclic needs a self-reference")
        missing = sorted(set(mentioned) - known)
        if missing:
            raise ValueError(f"{self.name}: rules name unknown columns {missing}")

    def column(self, name: str) -> Column:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.name} has no column {name!r}") from None

    # Cached (the declarations are immutable): uploads look columns up for every value.
    @cached_property
    def _by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    @cached_property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @cached_property
    def writable_columns(self) -> tuple[Column, ...]:
        """The columns a client's upload sets (everything but the server's stamps)."""
        return tuple(c for c in self.columns if not c.server_set)

    @cached_property
    def references(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.references is not None)

    @property
    def ids_reused(self) -> bool:
        """Ids derived from a pair come back by design (a book put back on a shelf), so a
        deleted row's id may be written again later; other ids, once deleted, stay deleted."""
        return self.id_from is not None

    def derived_id(self, values: dict[str, Any]) -> str | None:
        """The id a membership row must have, or None when the table's ids are free UUIDs."""
        if self.id_from is None:
            return None
        first, second = (values.get(name) for name in self.id_from)
        if first is None or second is None:
            return None
        return f"{first}:{second}"


# Every synced table has these two, not declared per table: the row id (a client-generated UUID,
# or the `id_from` pair) and the owner, which only the server sets (from the uploader's token).
ID = "id"
OWNER = "owner_user_id"
RESERVED_COLUMNS = frozenset({ID, OWNER})

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
