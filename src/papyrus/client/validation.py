"""Local writes checked against the sync contract before they are queued.

The server refuses a transaction whole when one of its writes breaks a rule, and the device then
quietly returns to the server's version: the reader learns nothing at the moment they made the
mistake. So the client runs the same rules first, from the same declarations
(`papyrus.contract`): `validate_row` for every value, and, over the local database, what the
server checks across rows: references to existing rows, derived membership ids, unique keys,
acyclic self-references, closed history rows and immutable columns.

Two callers, one implementation: the repositories check the changes they are about to make
(`check_changes` over the database overlaid with those changes), and `PowerSyncDatabase`
checks every transaction's queued entries at commit (`check_transaction`), whichever API wrote
them, so no invalid write is ever queued.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from papyrus.client.errors import PapyrusClientError
from papyrus.contract import (
    DELETE,
    ID,
    PATCH,
    PUT,
    TABLES,
    TABLES_BY_NAME,
    Column,
    OnDelete,
    Problem,
    Table,
    Type,
    check_row_id,
    check_rules,
    from_local,
    to_local,
    validate_row,
)

Key = tuple[str, str]  # (table name, row id)
Row = dict[str, Any]  # a row as the local view holds it (SQLite's encoding)
Query = Callable[[str, tuple[Any, ...]], list[Row]]

_CHUNK = 500  # ids per `IN (...)` look-up, well under SQLite's parameter limit


class ValidationError(PapyrusClientError, ValueError):
    """A write breaks a rule of the sync contract; nothing of it was written.

    `code` is the server's code for the same refusal (`invalid_value`, `missing_field`,
    `invalid_reference`, `duplicate`, `cycle`, `closed`, `immutable_field`, ...), `field` the
    column it is about (when it is about one) and `reason` the server's message."""

    def __init__(self, table: str, row_id: str | None, code: str, reason: str) -> None:
        super().__init__(f"{table}: {reason}")
        self.table = table
        self.row_id = row_id
        self.code = code
        self.reason = reason
        self.field = _field_of(table, reason)

    @classmethod
    def of(cls, table: Table, row_id: str | None, problem: Problem) -> ValidationError:
        return cls(table.name, row_id, problem.code, problem.message)


def _field_of(table: str, reason: str) -> str | None:
    name, sep, _ = reason.partition(":")
    declared = TABLES_BY_NAME.get(table)
    if not sep or declared is None or name not in declared.column_names:
        return None
    return name


@dataclass
class Change:
    """The net effect of one transaction's writes on one row, as the server collapses them:
    `kind` is PUT (the row written whole), PATCH (the columns in `values`) or DELETE."""

    table: Table
    row_id: str
    kind: str
    values: dict[str, Any] = field(default_factory=dict)  # normalised (`validate_row`)
    delete_first: bool = False  # deleted, then written again

    @property
    def key(self) -> Key:
        return (self.table.name, self.row_id)

    @property
    def writes(self) -> bool:
        return self.kind in (PUT, PATCH)

    @property
    def deletes(self) -> bool:
        return self.kind == DELETE or self.delete_first


class Changes(dict[Key, Change]):
    """Rows changed by one transaction, keyed by (table, id), in the order first touched."""

    def add(self, table: Table, kind: str, row_id: str, values: Mapping[str, Any]) -> Change:
        key = (table.name, row_id)
        change = self.get(key)
        if change is None:
            change = self[key] = Change(table, row_id, kind, dict(values))
            return change
        if kind == PUT:
            change.delete_first = change.delete_first or change.kind == DELETE
            change.kind, change.values = PUT, dict(values)
        elif kind == PATCH:
            if change.kind != DELETE:  # patching a row this transaction deleted changes nothing
                change.values.update(values)
        else:
            change.kind, change.values, change.delete_first = DELETE, {}, False
        return change


class LocalRows(Protocol):
    """What the checks read from the local database."""

    def current(self, table: Table, ids: Collection[str]) -> dict[str, Row]:
        """The rows with these ids, as they are once the changes are made (absent: no row)."""
        ...

    def previous(self, table: Table, row_id: str) -> Row | None:
        """The row as it was before the changes (None: it did not exist)."""
        ...

    def scan(self, table: Table, columns: Sequence[str]) -> list[Row]:
        """`id` and `columns` of every row, once the changes are made."""
        ...


# --- entry points --------------------------------------------------------------------------------


def check_entry(table: Table, op: str, row_id: Any, data: Mapping[str, Any] | None) -> Change:
    """One write (PUT, PATCH or DELETE with its data) checked on its own, as the server checks
    an uploaded entry: the id, then every value."""
    canonical = check_row_id(table, row_id)
    if canonical is None:
        if table.id_from:
            first, second = table.id_from
            reason = f"{table.name} ids are <{first}>:<{second}> (UUIDs)."
        else:
            reason = "id must be a UUID string."
        raise ValidationError(table.name, _shown(row_id), "invalid_id", reason)
    if op == DELETE:
        return Change(table, canonical, DELETE)
    values, problems = validate_row(table, op, canonical, data or {})
    if problems:
        raise ValidationError.of(table, canonical, problems[0])
    return Change(table, canonical, op, values)


def check_transaction(entries: Iterable[Mapping[str, Any]], rows: LocalRows) -> None:
    """A committed-to-be transaction's queued entries (`{"op", "type", "id", "data"}`), each
    checked, then their net effect checked across rows. Tables the contract does not declare
    (an app's own) are not ours to judge and pass."""
    changes = Changes()
    for entry in entries:
        table = TABLES_BY_NAME.get(str(entry.get("type")))
        if table is None:
            continue
        one = check_entry(table, str(entry.get("op")), entry.get("id"), entry.get("data"))
        changes.add(table, one.kind, one.row_id, one.values)
    if changes:
        check_changes(changes, rows)


def check_changes(changes: Mapping[Key, Change], rows: LocalRows) -> None:
    """The rules that need other rows, over the local database as it is after `changes`.
    Raises the first `ValidationError` found."""
    by_table: dict[str, list[Change]] = defaultdict(list)
    for change in changes.values():
        by_table[change.table.name].append(change)
    for table in TABLES:
        group = by_table.get(table.name)
        if not group:
            continue
        _check_row_rules(table, group, rows)
        _check_history(table, group, changes, rows)
        for unique in table.unique:
            _check_unique(table, unique.columns, unique.case_insensitive, group, rows)
        if table.acyclic is not None:
            _check_acyclic(table, table.acyclic, group, rows)
    _check_references(changes, rows)


# --- the rules across rows -----------------------------------------------------------------------


def _check_row_rules(table: Table, group: list[Change], rows: LocalRows) -> None:
    """A PATCH is checked against the whole row it leaves (`validate_row` saw only its
    columns); a PUT was checked whole already."""
    if not table.checks:
        return
    mentioned = {c for rule in table.checks for c in (rule.earlier, rule.later)}
    patched = [c for c in group if c.kind == PATCH and mentioned & c.values.keys()]
    if not patched:
        return
    found = rows.current(table, [c.row_id for c in patched])
    for change in patched:
        row = found.get(change.row_id)
        if row is None:
            continue
        merged = {name: from_local(table.column(name), row.get(name)) for name in mentioned}
        problems = check_rules(table, merged)
        if problems:
            raise ValidationError.of(table, change.row_id, problems[0])


def _check_history(
    table: Table, group: list[Change], changes: Mapping[Key, Change], rows: LocalRows
) -> None:
    """Closed rows (`closed_by` set before this transaction) cannot change or go, except with
    their parent; a PUT over a stored row keeps its immutable columns (a PATCH cannot name
    them, `validate_row` refuses that)."""
    immutable = [c for c in table.columns if c.immutable]
    if table.closed_by is None and not immutable:
        return
    for change in group:
        if change.kind == PATCH and not change.values:
            continue  # changes nothing
        before = rows.previous(table, change.row_id)
        if before is None:
            continue
        if table.closed_by is not None and before.get(table.closed_by) is not None:
            _check_closed(table, change, before, changes)
            continue
        if change.kind == PUT and not change.delete_first:
            for column in immutable:
                if column.name in change.values and not same(
                    column, before.get(column.name), change.values[column.name]
                ):
                    raise ValidationError(
                        table.name,
                        change.row_id,
                        "immutable_field",
                        f"{column.name}: cannot change once set.",
                    )


def _check_closed(table: Table, change: Change, before: Row, changes: Mapping[Key, Change]) -> None:
    reason = f"{table.name} rows are history once {table.closed_by} is set."
    if change.deletes:
        for column in table.references:
            parent = changes.get((column.references or "", str(before.get(column.name))))
            if column.on_delete is OnDelete.CASCADE and parent is not None and parent.deletes:
                return  # deleted with its parent, as the server's cascade does
        raise ValidationError(table.name, change.row_id, "closed", reason)
    # A PUT sets every column (left out means null); a PATCH only the ones it names.
    columns = (
        table.writable_columns
        if change.kind == PUT
        else [table.column(name) for name in change.values]
    )
    if not all(same(c, before.get(c.name), change.values.get(c.name)) for c in columns):
        raise ValidationError(table.name, change.row_id, "closed", reason)


def _check_unique(
    table: Table,
    columns: tuple[str, ...],
    case_insensitive: bool,
    group: list[Change],
    rows: LocalRows,
) -> None:
    written = [c for c in group if c.writes and (c.kind == PUT or set(columns) & c.values.keys())]
    if not written:
        return
    holders: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    keys: dict[str, tuple[Any, ...]] = {}
    key: tuple[Any, ...] | None
    for row in rows.scan(table, columns):
        values = tuple(row.get(c) for c in columns)
        if None in values:
            continue
        key = tuple(v.lower() if case_insensitive and isinstance(v, str) else v for v in values)
        holders[key].add(str(row[ID]))
        keys[str(row[ID])] = key
    for change in written:
        key = keys.get(change.row_id)
        if key is not None and len(holders[key]) > 1:
            shown = ", ".join(columns)
            raise ValidationError(
                table.name,
                change.row_id,
                "duplicate",
                f"{shown}: another of your {table.name} rows already has this value.",
            )


def _check_acyclic(table: Table, column: str, group: list[Change], rows: LocalRows) -> None:
    changed = [c for c in group if c.writes and c.values.get(column) is not None]
    if not changed:
        return
    parent_of = {str(r[ID]): r.get(column) for r in rows.scan(table, (column,))}
    for change in changed:
        node = parent_of.get(change.row_id)
        for _ in range(len(parent_of) + 1):
            if node is None or node == change.row_id:
                break
            node = parent_of.get(node)
        if node == change.row_id:
            raise ValidationError(
                table.name,
                change.row_id,
                "cycle",
                f"{column}: would make this {table.name} row its own ancestor.",
            )


def _check_references(changes: Mapping[Key, Change], rows: LocalRows) -> None:
    """Every reference a write sets names a row of the local database (after the changes: a
    row written earlier in the same transaction counts, one deleted by it does not)."""
    wanted: dict[str, list[tuple[Change, Column, str]]] = defaultdict(list)
    for change in changes.values():
        if not change.writes:
            continue
        for column in change.table.references:
            value = change.values.get(column.name)
            if value is not None and column.references is not None:
                wanted[column.references].append((change, column, str(value)))
    for name, uses in wanted.items():
        target = TABLES_BY_NAME[name]
        found = rows.current(target, {value for _, _, value in uses})
        for change, column, value in uses:
            if value not in found:
                raise ValidationError(
                    change.table.name,
                    change.row_id,
                    "invalid_reference",
                    f"{column.name}: no such {name} row of yours.",
                )


# --- the local database as the checks see it -----------------------------------------------------


class DatabaseRows:
    """The local database as it is now, through the tables' views. `previous` is given by the
    caller: inside a commit, the rows as the transaction found them."""

    def __init__(
        self, query: Query, previous: Callable[[Table, str], Row | None] | None = None
    ) -> None:
        self._query = query
        self._previous = previous

    def current(self, table: Table, ids: Collection[str]) -> dict[str, Row]:
        out: dict[str, Row] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ", ".join("?" for _ in chunk)
            for row in self._query(
                f'SELECT * FROM "{table.name}" WHERE id IN ({marks})', tuple(chunk)
            ):
                out[str(row[ID])] = row
        return out

    def previous(self, table: Table, row_id: str) -> Row | None:
        if self._previous is not None:
            return self._previous(table, row_id)
        return self.current(table, [row_id]).get(row_id)

    def scan(self, table: Table, columns: Sequence[str]) -> list[Row]:
        names = ", ".join(f'"{c}"' for c in (ID, *columns))
        return self._query(f'SELECT {names} FROM "{table.name}"', ())


class PlannedRows:
    """The local database as it will be once `changes` (not yet written) are made: what a
    repository checks before it writes anything."""

    def __init__(self, base: DatabaseRows, changes: Mapping[Key, Change]) -> None:
        self._base = base
        self._changes = changes

    def current(self, table: Table, ids: Collection[str]) -> dict[str, Row]:
        planned = {i: self._changes.get((table.name, i)) for i in ids}
        stored_ids = [
            i for i, c in planned.items() if c is None or (c.kind == PATCH and not c.delete_first)
        ]
        stored = self._base.current(table, stored_ids) if stored_ids else {}
        out: dict[str, Row] = {}
        for row_id, change in planned.items():
            row = self._apply(table, row_id, stored.get(row_id), change)
            if row is not None:
                out[row_id] = row
        return out

    def previous(self, table: Table, row_id: str) -> Row | None:
        return self._base.current(table, [row_id]).get(row_id)

    def scan(self, table: Table, columns: Sequence[str]) -> list[Row]:
        out = []
        seen = set()
        for row in self._base.scan(table, columns):
            row_id = str(row[ID])
            seen.add(row_id)
            change = self._changes.get((table.name, row_id))
            applied = self._apply(table, row_id, row, change)
            if applied is not None:
                out.append(applied)
        for (name, row_id), change in self._changes.items():
            if name == table.name and row_id not in seen:
                applied = self._apply(table, row_id, None, change)
                if applied is not None:
                    out.append(applied)
        return out

    @staticmethod
    def _apply(table: Table, row_id: str, stored: Row | None, change: Change | None) -> Row | None:
        if change is None:
            return stored
        if change.kind == DELETE:
            return None
        encoded = {n: to_local(table.column(n), v) for n, v in change.values.items()}
        if change.kind == PUT:
            return {ID: row_id, **encoded}
        if stored is None:
            return None  # a PATCH of a row that is not there changes nothing
        return {**stored, **encoded}


# --- helpers -------------------------------------------------------------------------------------


def same(column: Column, stored: Any, value: Any) -> bool:
    """Whether a value the local database holds equals a normalised written value."""
    stored = from_local(column, stored)
    if stored is None or value is None:
        return stored is None and value is None
    if column.type is Type.TIMESTAMP:
        try:
            return datetime.fromisoformat(str(stored)) == datetime.fromisoformat(str(value))
        except ValueError:
            return bool(stored == value)
    if column.type is Type.REAL:
        return float(stored) == float(value)
    if column.type is Type.BOOLEAN:
        return bool(stored) == bool(value)
    return bool(stored == value)


def _shown(value: Any) -> str | None:
    return value[:80] if isinstance(value, str) else None
