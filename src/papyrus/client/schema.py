"""Schema, Table, Column and Index: the local tables, as the PowerSync SDKs describe them.

`Schema.to_json()` produces exactly the JSON `@powersync/node`'s `Schema.toJSON()` hands to the
core extension, so a Python client and a Node client lay out the same views.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from papyrus.contract.powersync import client_tables

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ColumnType(StrEnum):
    TEXT = "TEXT"
    INTEGER = "INTEGER"
    REAL = "REAL"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = ColumnType.TEXT

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.name):
            raise ValueError(f"invalid column name: {self.name!r}")
        if self.name == "id":
            # The view always has an implicit text `id`; declaring it breaks the view.
            raise ValueError("do not declare an 'id' column; every table has one implicitly")

    @classmethod
    def text(cls, name: str) -> Column:
        return cls(name, ColumnType.TEXT)

    @classmethod
    def integer(cls, name: str) -> Column:
        return cls(name, ColumnType.INTEGER)

    @classmethod
    def real(cls, name: str) -> Column:
        return cls(name, ColumnType.REAL)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": str(self.type)}


@dataclass(frozen=True)
class Index:
    """An index over columns of a table; `(name, ascending)` pairs or plain names."""

    name: str
    columns: Sequence[str | tuple[str, bool]]

    def to_json(self, table: Table) -> dict[str, Any]:
        types = {c.name: str(c.type) for c in table.columns}
        out = []
        for col in self.columns:
            name, ascending = (col, True) if isinstance(col, str) else col
            if name not in types:
                raise ValueError(f"index {self.name!r} names unknown column {name!r}")
            out.append({"name": name, "ascending": ascending, "type": types[name]})
        return {"name": self.name, "columns": out}


@dataclass(frozen=True)
class Table:
    """One synced (or local-only) table, exposed to SQL as a view named `view_name or name`."""

    name: str
    columns: Sequence[Column]
    indexes: Sequence[Index] = ()
    local_only: bool = False
    insert_only: bool = False
    view_name: str | None = None
    include_old: bool = False
    include_metadata: bool = False
    ignore_empty_update: bool = False

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.name):
            raise ValueError(f"invalid table name: {self.name!r}")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name!r} declares a column twice")
        if self.local_only and self.insert_only:
            raise ValueError("a table cannot be both local_only and insert_only")

    @property
    def visible_name(self) -> str:
        return self.view_name or self.name

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "view_name": self.visible_name,
            "columns": [c.to_json() for c in self.columns],
            "indexes": [i.to_json(self) for i in self.indexes],
            "local_only": self.local_only,
            "insert_only": self.insert_only,
            "include_old": self.include_old,
            "include_old_only_when_changed": False,
            "include_metadata": self.include_metadata,
            "ignore_empty_update": self.ignore_empty_update,
        }


@dataclass(frozen=True)
class Schema:
    tables: Sequence[Table] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [t.visible_name for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError("two tables share a view name")

    def table(self, name: str) -> Table:
        for t in self.tables:
            if name in (t.name, t.visible_name):
                return t
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {"tables": [t.to_json() for t in self.tables], "raw_tables": []}

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


def _from_contract(spec: dict[str, Any], *, local_only: bool = False) -> Table:
    columns = [Column(c["name"], ColumnType(c["type"])) for c in spec["columns"]]
    indexes = [Index(i["name"], i["columns"]) for i in spec["indexes"]]
    return Table(spec["name"], columns, indexes, local_only=local_only)


SYNCED_TABLES: tuple[Table, ...] = tuple(_from_contract(spec) for spec in client_tables())
"""Every synced table, as the declarations give it (the server's columns but the implicit id)."""

BOOK_COLUMNS: tuple[Column, ...] = tuple(Schema(SYNCED_TABLES).table("books").columns)

# Rejections the server returned for our uploads; local to this device, cleared with the account.
UPLOAD_REJECTIONS = Table(
    "upload_rejections",
    [
        Column.integer("op_id"),
        Column.text("row_id"),
        Column.text("row_type"),
        Column.text("op"),
        Column.text("code"),
        Column.text("message"),
        Column.text("rejected_at"),
    ],
    local_only=True,
)

# The reading sessions this device has open, and where its reader last was in each: whether the
# next progress extends a session is this device's knowledge, never synced. The id is the
# session's.
READING_ACTIVITY = Table(
    "reading_activity",
    [
        Column.text("book_id"),
        Column.text("last_at"),
        Column.integer("page"),
        Column.real("position"),
    ],
    local_only=True,
)

ACCOUNT_SCHEMA = Schema([*SYNCED_TABLES, UPLOAD_REJECTIONS, READING_ACTIVITY])
"""The synced account database: every synced table, plus this device's upload rejections and
open reading sessions (both local-only)."""

GUEST_TABLES: tuple[Table, ...] = tuple(
    _from_contract(spec, local_only=True) for spec in client_tables()
)
"""Every synced table, local-only."""

GUEST_SCHEMA = Schema([*GUEST_TABLES, READING_ACTIVITY])
"""The guest library: the same views, but local-only, so nothing is ever uploaded."""
