"""PostgreSQL storage of the synced tables, generated from the contract's declarations, plus the
server's own sync bookkeeping (rejections, tombstones).

Synced rows are written only through the upload path, but the database enforces the
declarations too (CHECK constraints, same-owner foreign keys), so no other writer can store what
the clients' schema cannot hold or link one reader's row to another's. `tests/server/
test_schema_declarations.py` proves the migrated database equals what this module generates.

Storage per declared type: text → varchar(max length), integer → integer, real → double
precision, boolean → boolean, json → jsonb, timestamp → timestamptz, date → date, id → uuid;
the id of a table whose ids come from a pair (`id_from`) is text.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Constraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, ExcludeConstraint
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import conv
from sqlalchemy.types import TypeEngine

from papyrus import contract
from papyrus.contract import (
    ID,
    OWNER,
    Before,
    JsonObject,
    Location,
    OnDelete,
    StringList,
    Type,
)
from papyrus.server.db import Base

# Longest row id echoed back or recorded: the longest id `contract.check_row_id` considers.
ROW_ID_MAX = 2 * contract.values.MAX_UUID_TEXT + 1

_SQL_TYPES: dict[Type, str] = {
    Type.TEXT: "text",
    Type.INTEGER: "integer",
    Type.REAL: "double precision",
    Type.BOOLEAN: "boolean",
    Type.JSON: "jsonb",
    Type.TIMESTAMP: "timestamptz",
    Type.DATE: "date",
    Type.ID: "uuid",
}


def sql_type(column: contract.Column) -> str:
    """The PostgreSQL type a value of `column` is cast to in statements (not its storage)."""
    return _SQL_TYPES[column.type]


def id_sql_type(table: contract.Table) -> str:
    return "text" if table.id_from else "uuid"


def storage_type(column: contract.Column) -> TypeEngine[Any]:
    if column.type is Type.TEXT:
        return String(column.max_length)
    types: dict[Type, TypeEngine[Any]] = {
        Type.INTEGER: Integer(),
        Type.REAL: Double(),
        Type.BOOLEAN: Boolean(),
        Type.JSON: JSONB(),
        Type.TIMESTAMP: DateTime(timezone=True),
        Type.DATE: Date(),
        Type.ID: UUID(as_uuid=True),
    }
    return types[column.type]


def server_default(column: contract.Column) -> str | None:
    """The SQL default of a column: the declared default, or now() for the server's stamps."""
    if column.stamp is not None:
        return "now()"
    if column.default is None:
        return None
    return _literal(column.default)


def checks(table: contract.Table) -> dict[str, str]:
    """Every CHECK constraint of a table, by name (without the `ck_<table>_` prefix)."""
    found: dict[str, str] = {}
    if table.id_from:
        first, second = (_q(n) for n in table.id_from)
        found["id_pair"] = f"id = ({first}::text || ':' || {second}::text)"
    for column in table.columns:
        name = _q(column.name)
        if column.choices:
            found[f"{column.name}_choices"] = (
                f"{name} IN ({', '.join(_literal(c) for c in column.choices)})"
            )
        elif column.length is not None and column.length[0] > 0:
            low, high = column.length
            found[f"{column.name}_length"] = f"char_length({name}) BETWEEN {low} AND {high}"
        if column.pattern is not None:
            found[f"{column.name}_pattern"] = f"{name} ~ {_literal(f'^(?:{column.pattern})$')}"
        if column.range is not None:
            least, most = column.range
            found[f"{column.name}_range"] = f"{name} BETWEEN {_number(least)} AND {_number(most)}"
        if column.json is not None:
            found[f"{column.name}_shape"] = _json_check(name, column.json)
    for rule in table.checks:
        found[_before_name(rule)] = f"{_q(rule.earlier)} <= {_q(rule.later)}"
    return found


def unique_key_name(table: contract.Table, unique: contract.Unique) -> str:
    return f"uq_{table.name}_{'_'.join(unique.columns)}"


def referenced_tables() -> frozenset[str]:
    """Tables some reference points at: they carry the `(id, owner)` key references use."""
    return frozenset(c.references for t in contract.TABLES for c in t.references if c.references)


def same_owner_key_name(table: contract.Table) -> str:
    return f"uq_{table.name}_id_owner"


def _build(table: contract.Table) -> Table:
    id_type: TypeEngine[Any] = Text() if table.id_from else UUID(as_uuid=True)
    columns: list[Column[Any]] = [
        Column(ID, id_type, nullable=False),
        Column(
            OWNER,
            UUID(as_uuid=True),
            ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
    ]
    for declared in table.columns:
        default = server_default(declared)
        columns.append(
            Column(
                declared.name,
                storage_type(declared),
                nullable=not (declared.required or declared.stamp is not None),
                server_default=text(default) if default is not None else None,
                index=declared.references is not None,
            )
        )
    constraints: list[Constraint] = [PrimaryKeyConstraint(ID)]
    if table.name in referenced_tables():
        constraints.append(UniqueConstraint(ID, OWNER, name=conv(same_owner_key_name(table))))
    for declared in table.references:
        # Composite: a reference can only ever point at a row of the same owner.
        on_delete = (
            "CASCADE" if declared.on_delete is OnDelete.CASCADE else f"SET NULL ({declared.name})"
        )
        constraints.append(
            ForeignKeyConstraint(
                [declared.name, OWNER],
                [f"{declared.references}.{ID}", f"{declared.references}.{OWNER}"],
                ondelete=on_delete,
            )
        )
    for name, condition in checks(table).items():
        constraints.append(CheckConstraint(condition, name=name))
    built = Table(table.name, Base.metadata, *columns, *constraints)
    for unique in table.unique:
        # An exclusion constraint rather than a unique index: it can be checked at commit, so
        # one transaction may rename a row and reuse its old value (the upload applies all
        # upserts before all patches). Equality on btree makes it a plain unique key.
        expressions = [
            (func.lower(built.c[c]) if unique.case_insensitive else built.c[c], "=")
            for c in unique.columns
        ]
        built.append_constraint(
            ExcludeConstraint(
                (built.c[OWNER], "="),
                *expressions,
                name=conv(unique_key_name(table, unique)),
                using="btree",
                deferrable=True,
                initially="DEFERRED",
            )
        )
    trigger = DDL(tombstone_trigger(table.name))  # type: ignore[no-untyped-call]  # unannotated
    event.listen(built, "after_create", trigger)
    return built


class SyncRejection(Base):
    """One uploaded operation that did not take effect: rejected with its whole transaction, or
    dropped alone because its row (or its row's parent) was deleted before it arrived."""

    __tablename__ = "sync_rejections"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # Groups the rejections of one uploaded transaction.
    upload_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    tx_id: Mapped[int | None] = mapped_column(BigInteger)
    op_id: Mapped[int | None] = mapped_column(BigInteger)
    op: Mapped[str | None] = mapped_column(String(8))
    row_id: Mapped[str | None] = mapped_column(String(ROW_ID_MAX))
    code: Mapped[str] = mapped_column(String(64), nullable=False)
    message: Mapped[str] = mapped_column(String(2000), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class SyncUploadPart(Base):
    """One part of a client transaction too large for one request, staged until its last part
    arrives (see sync/staging.py). `body` is the part's request body exactly as received."""

    __tablename__ = "sync_upload_parts"
    __table_args__ = (
        CheckConstraint("part_index >= 0 AND part_index < part_count", name="part_index_range"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    upload_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    part_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    part_count: Mapped[int] = mapped_column(Integer, nullable=False)
    tx_id: Mapped[int | None] = mapped_column(BigInteger)
    entry_count: Mapped[int] = mapped_column(Integer, nullable=False)
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False, index=True
    )


class SyncTombstone(Base):
    """A synced row that was deleted (by an upload, or with its parent): late writes to it, or
    to its children, are dropped instead of bringing it back. Kept `TOMBSTONE_DAYS`."""

    __tablename__ = "sync_tombstones"
    __table_args__ = (Index("ix_sync_tombstones_user_id_deleted_at", "user_id", "deleted_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    table_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    row_id: Mapped[str] = mapped_column(Text, primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


TOMBSTONE_DAYS = 90

# One statement-level trigger per synced table records every deleted row, cascades included.
# Rows deleted because their user is being deleted leave no tombstone (nothing could come back).
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


def tombstone_trigger(table_name: str) -> str:
    return (
        f"CREATE TRIGGER record_tombstones AFTER DELETE ON {table_name} "
        "REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION sync_record_tombstones()"
    )


_FUNCTION = DDL(TOMBSTONE_FUNCTION)  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it unannotated
event.listen(Base.metadata, "before_create", _FUNCTION)


# --- helpers -------------------------------------------------------------------------------------


def _json_check(name: str, shape: StringList | JsonObject | Location) -> str:
    if isinstance(shape, StringList):
        return (
            f"CASE WHEN jsonb_typeof({name}) = 'array' THEN "
            f"jsonb_array_length({name}) <= {shape.max_items} AND "
            f"NOT jsonb_path_exists({name}, '$[*] ? (@.type() != \"string\")') "
            f"ELSE {name} IS NULL END"
        )
    if isinstance(shape, JsonObject):
        return f"jsonb_typeof({name}) = 'object'"
    return (
        f"CASE WHEN jsonb_typeof({name}) = 'object' THEN {name} <> '{{}}'::jsonb AND "
        f"({name} - ARRAY['cfi', 'page', 'fraction']) = '{{}}'::jsonb AND "
        f"coalesce(jsonb_typeof({name} -> 'cfi'), 'string') = 'string' AND "
        f"coalesce(jsonb_typeof({name} -> 'page'), 'number') = 'number' AND "
        f"coalesce(jsonb_typeof({name} -> 'fraction'), 'number') = 'number' AND "
        f"NOT jsonb_path_exists({name}, "
        f"'$ ? (@.page < 0 || @.fraction < 0 || @.fraction > 1)') ELSE {name} IS NULL END"
    )


def _before_name(rule: Before) -> str:
    return f"{rule.earlier}_before_{rule.later}"


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return "'" + json.dumps(value).replace("'", "''") + "'::jsonb"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _q(name: str) -> str:
    return f'"{name}"'


SYNCED: dict[str, Table] = {declared.name: _build(declared) for declared in contract.TABLES}
"""The SQLAlchemy table of every synced table, in apply order."""
