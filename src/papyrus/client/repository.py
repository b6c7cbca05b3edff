"""One repository for every synced table, driven by the declarations (`papyrus.contract`).

`Repository(database, Record)` adds, updates, deletes, reads, lists, counts and watches the
rows of the record's table. Per-table behaviour comes from the declaration, never from the
table's name: which values are valid, stamps, derived membership ids, what a delete takes with
it (`on_delete` of every reference to the table), which columns a search looks in.

Writes go through `Batch`: the changes of one call are planned first, checked against the
contract over the database as it would be after them (`validation.check_changes`), and only
then written, in one transaction, so a refused call writes nothing. In the account database the
commit check of `PowerSyncDatabase` then sees the same changes again, with every other write of
the transaction.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic

from papyrus.client.errors import NotFoundError
from papyrus.client.records import R
from papyrus.client.validation import (
    Changes,
    DatabaseRows,
    PlannedRows,
    ValidationError,
    check_changes,
)
from papyrus.contract import (
    DELETE,
    ID,
    OWNER,
    PATCH,
    PUT,
    TABLES,
    OnDelete,
    Stamp,
    Table,
    Type,
    check_row_id,
    to_local,
    validate_row,
)

if TYPE_CHECKING:
    from papyrus.client.database import PowerSyncDatabase, Watch


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_QUERY_OPTIONS = frozenset({"search", "sort", "descending", "limit", "offset"})


@dataclass(frozen=True)
class Query:
    """Which rows a list shows, in which order, and which page of them.

    `where`: column = value for each item (None: the column is empty; a list or tuple: any of
    its values). `search`: text found (case-insensitively) in any of the table's free-text
    columns. `sort`: a column (the record's default when None)."""

    where: Mapping[str, Any] = field(default_factory=dict)
    search: str | None = None
    sort: str | None = None
    descending: bool = False
    limit: int | None = None
    offset: int = 0

    def conditions(self, table: Table) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for name, value in self.where.items():
            column = table.column(name) if name not in (ID, OWNER) else None
            if value is None:
                where.append(f'"{name}" IS NULL')
            elif isinstance(value, list | tuple | set | frozenset):
                items = list(value)
                where.append(f'"{name}" IN ({", ".join("?" for _ in items)})' if items else "0")
                params += [to_local(column, v) if column else v for v in items]
            elif column is not None and column.type is Type.BOOLEAN:
                default = 1 if column.default else 0
                where.append(f'COALESCE("{name}", {default}) = ?')
                params.append(1 if value else 0)
            else:
                where.append(f'"{name}" = ?')
                params.append(to_local(column, value) if column else value)
        if self.search:
            texts = searchable(table)
            if texts:
                where.append("(" + " OR ".join(f'"{c}" LIKE ?' for c in texts) + ")")
                params += [f"%{self.search}%"] * len(texts)
        return where, params

    def order(self, table: Table, default: str, alias: str = "") -> str:
        """ORDER BY terms: empty values last, text ignoring case, then the id (a stable order
        for paging). `alias` qualifies the columns in a join."""
        name = str(self.sort or default)
        if name not in (ID, OWNER):
            table.column(name)  # KeyError for a column the table does not have
        column = f'{alias}."{name}"' if alias else f'"{name}"'
        direction = "DESC" if self.descending else "ASC"
        last = f"{alias}.id" if alias else "id"
        return f"{column} IS NULL, {column} COLLATE NOCASE {direction}, {last}"

    def sql(self, table: Table, default_sort: str = ID) -> tuple[str, list[Any]]:
        where, params = self.conditions(table)
        sql = f'SELECT * FROM "{table.name}"' + _where(where)
        sql += " ORDER BY " + self.order(table, default_sort)
        if self.limit is not None or self.offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if self.limit is None else int(self.limit), int(self.offset)]
        return sql, params

    def count_sql(self, table: Table) -> tuple[str, list[Any]]:
        """How many rows match, ignoring sort, limit and offset."""
        where, params = self.conditions(table)
        return f'SELECT count(*) AS n FROM "{table.name}"' + _where(where), params


def searchable(table: Table) -> list[str]:
    """Free-text columns: text without a fixed set of values or a pattern."""
    return [
        c.name for c in table.columns if c.type is Type.TEXT and not c.choices and c.pattern is None
    ]


def _where(conditions: list[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


class Batch:
    """The writes of one call: planned, checked as a whole, then written in one transaction.

    `put`, `patch` and `delete` only plan (a value that breaks its column's rule raises at
    once); `apply` checks the rules across rows against the database as it would be after the
    plan, and writes. With `database.validate_writes` off nothing is checked and values are
    written as given."""

    def __init__(self, database: PowerSyncDatabase, owner_user_id: str | None = None) -> None:
        self.database = database
        self.owner_user_id = owner_user_id
        self.changes = Changes()
        self._steps: list[tuple[str, Table, str, dict[str, Any]]] = []
        self._deleting: set[tuple[str, str]] = set()

    @property
    def checking(self) -> bool:
        return self.database.validate_writes

    def put(self, table: Table, values: Mapping[str, Any], row_id: str | None = None) -> str:
        """Plans a new row; returns its id (given, derived from the pair for a membership, or a
        new UUID)."""
        values = {k: v for k, v in values.items() if k not in (ID, OWNER)}
        row_id = row_id if row_id is not None else _derived(table, values)
        if self.checking:
            canonical = check_row_id(table, row_id)
            if canonical is None:
                raise ValidationError(table.name, str(row_id), "invalid_id", _id_rule(table))
            normalized, problems = validate_row(table, PUT, canonical, values)
            if problems:
                raise ValidationError.of(table, canonical, problems[0])
            row_id = canonical
        else:
            normalized = values
        local = self._encode(table, normalized)
        now = now_iso()
        for column in table.columns:
            if column.stamp is not None:
                local[column.name] = now
        local[OWNER] = self.owner_user_id
        self.changes.add(table, PUT, row_id, normalized)
        self._steps.append((PUT, table, row_id, local))
        return row_id

    def patch(self, table: Table, row_id: str, values: Mapping[str, Any]) -> None:
        """Plans changes to a stored row (a value of None clears the column)."""
        values = {k: v for k, v in values.items() if k != ID}
        if not values:
            return
        if self.checking:
            normalized, problems = validate_row(table, PATCH, row_id, values)
            if problems:
                raise ValidationError.of(table, row_id, problems[0])
        else:
            normalized = values
        local = self._encode(table, normalized)
        now = now_iso()
        for column in table.columns:
            if column.stamp is Stamp.UPDATED:
                local[column.name] = now
        self.changes.add(table, PATCH, row_id, normalized)
        self._steps.append((PATCH, table, row_id, local))

    def delete(self, table: Table, row_id: str) -> None:
        """Plans a delete and what it takes with it, as the server does: rows that reference
        it are deleted (`CASCADE`) or have the reference cleared (`SET_NULL`), children first."""
        key = (table.name, row_id)
        if key in self._deleting:
            return
        self._deleting.add(key)
        for child in TABLES:
            for column in child.references:
                if column.references != table.name:
                    continue
                found = self.database.get_all(
                    f'SELECT id FROM "{child.name}" WHERE "{column.name}" = ?', (row_id,)
                )
                for row in found:
                    child_id = str(row[ID])
                    if column.on_delete is OnDelete.CASCADE:
                        self.delete(child, child_id)
                    elif (child.name, child_id) not in self._deleting:
                        self.patch(child, child_id, {column.name: None})
        self.changes.add(table, DELETE, row_id, {})
        self._steps.append((DELETE, table, row_id, {}))

    def check(self) -> None:
        """The rules across rows, over the database as it will be after the plan."""
        if self.checking and self.changes:
            rows = PlannedRows(DatabaseRows(self.database.get_all), self.changes)
            check_changes(self.changes, rows)

    def apply(self) -> None:
        """Checks the plan, then writes it in one transaction (nothing when refused)."""
        self.check()
        with self.database.write_transaction():
            for op, table, row_id, local in self._steps:
                name = f'"{table.name}"'
                if op == PUT:
                    columns = ", ".join(f'"{n}"' for n in (ID, *local))
                    marks = ", ".join("?" for _ in range(len(local) + 1))
                    self.database.execute(
                        f"INSERT INTO {name} ({columns}) VALUES ({marks})",
                        (row_id, *local.values()),
                    )
                elif op == PATCH:
                    assignments = ", ".join(f'"{n}" = ?' for n in local)
                    self.database.execute(
                        f"UPDATE {name} SET {assignments} WHERE id = ?", (*local.values(), row_id)
                    )
                else:
                    self.database.execute(f"DELETE FROM {name} WHERE id = ?", (row_id,))
        self._steps.clear()

    @staticmethod
    def _encode(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in values.items():
            try:
                column = table.column(name)
            except KeyError:
                raise ValueError(f"unknown fields for {table.name}: {name}") from None
            out[name] = to_local(column, value)
        return out


def _derived(table: Table, values: Mapping[str, Any]) -> str:
    if table.id_from is None:
        return str(uuid.uuid4())
    first, second = (values.get(name) for name in table.id_from)
    if first is None or second is None:
        a, b = table.id_from
        raise ValidationError(table.name, None, "missing_field", f"{a} and {b}: required.")
    # Canonical halves, so the same pair always makes the same id.
    return check_row_id(table, f"{first}:{second}") or f"{first}:{second}"


def _id_rule(table: Table) -> str:
    if table.id_from:
        first, second = table.id_from
        return f"{table.name} ids are <{first}>:<{second}> (UUIDs)."
    return "id must be a UUID string."


class Repository(Generic[R]):
    """Rows of one synced table as `record` objects, read and written straight from the local
    database (never cached on the side).

    In the account database every write is queued for upload; in the guest database the
    tables are local-only and nothing leaves the device. Writes are checked against the
    contract first (`ValidationError`, nothing written)."""

    def __init__(
        self, database: PowerSyncDatabase, record: type[R], owner_user_id: str | None = None
    ) -> None:
        self.database = database
        self.record = record
        self.owner_user_id = owner_user_id

    @property
    def table(self) -> Table:
        return self.record.table

    def batch(self) -> Batch:
        return Batch(self.database, self.owner_user_id)

    # -- writes -------------------------------------------------------------------------------

    def add(self, **values: Any) -> R:
        """A new row from `values` (an `id` may be given; a membership's is derived)."""
        with self.database.write_transaction():
            batch = self.batch()
            row_id = batch.put(self.table, values, values.get(ID))
            if self.exists(row_id):
                raise ValidationError(
                    self.table.name, row_id, "exists", f"a {self.record.noun} with this id exists."
                )
            batch.apply()
            return self.require(row_id)

    def update(self, row_id: str, **changes: Any) -> R:
        """Changes columns of a row; a value of None clears the column."""
        with self.database.write_transaction():
            self.require(row_id)
            batch = self.batch()
            batch.patch(self.table, row_id, changes)
            batch.apply()
            return self.require(row_id)

    def delete(self, row_id: str) -> None:
        """Deletes a row and, as the server will, the rows that depend on it."""
        with self.database.write_transaction():
            self.require(row_id)
            batch = self.batch()
            batch.delete(self.table, row_id)
            batch.apply()

    # -- reads --------------------------------------------------------------------------------

    def get(self, row_id: str) -> R | None:
        row = self.database.get_optional(
            f'SELECT * FROM "{self.table.name}" WHERE id = ?', (row_id,)
        )
        return self.record.from_row(row) if row else None

    def exists(self, row_id: str) -> bool:
        found = self.database.get_optional(
            f'SELECT 1 AS found FROM "{self.table.name}" WHERE id = ?', (row_id,)
        )
        return found is not None

    def require(self, row_id: str) -> R:
        found = self.get(row_id)
        if found is None:
            raise NotFoundError(f"no {self.record.noun} with id {row_id}")
        return found

    def resolve(self, ref: str) -> R:
        """A row by full id, by its name (case-insensitively, when the table's rows have
        names), or by an unambiguous id prefix, as lists show ids."""
        exact = self.get(ref)
        if exact is not None:
            return exact
        name = f'"{self.table.name}"'
        label = self.record.label_column
        if label is not None:
            rows = self.database.get_all(
                f'SELECT id FROM {name} WHERE lower("{label}") = lower(?) LIMIT 2', (ref,)
            )
            if len(rows) == 1:
                return self.require(str(rows[0][ID]))
        pattern = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.database.get_all(
            f"SELECT id FROM {name} WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (pattern,)
        )
        if len(rows) != 1:
            what = f"several {self.record.nouns}" if rows else f"no {self.record.noun}"
            named = " or named so" if self.record.label_column else ""
            raise NotFoundError(f"{what} with an id starting with {ref!r}{named}")
        return self.require(str(rows[0][ID]))

    def list(self, query: Query | None = None, **filters: Any) -> list[R]:
        """Rows matching `query` (or `filters`: column=value, and search=, sort=,
        descending=, limit=, offset=)."""
        sql, params = self._query(query, filters).sql(self.table, self.record.sort_column)
        return self.select(sql, params)

    def count(self, query: Query | None = None, **filters: Any) -> int:
        """How many rows match (all of them without a filter); limit and offset are ignored."""
        sql, params = self._query(query, filters).count_sql(self.table)
        row = self.database.get_optional(sql, tuple(params))
        return int(row["n"]) if row else 0

    def watch(self, query: Query | None = None, **filters: Any) -> Watch[builtins.list[R]]:
        """The list now, then a fresh list after every change to what it reads, local, synced
        or from another process. Iterate it, or call `next(timeout)`; close it when done."""
        sql, params = self._query(query, filters).sql(self.table, self.record.sort_column)
        return self.watch_select(sql, params)

    def select(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[R]:
        """Rows of this table returned by any query (a join, say) that selects its columns."""
        return [self.record.from_row(r) for r in self.database.get_all(sql, tuple(params))]

    def watch_select(self, sql: str, params: Sequence[Any] = ()) -> Watch[builtins.list[R]]:
        """`select` now and after every change to any table the query reads (found by SQLite
        itself, so joins are followed)."""
        bound = tuple(params)
        tables = self.database.resolve_tables(sql, bound)
        return self.database.watch(lambda: self.select(sql, bound), tables)

    def linked_sql(self, link: Table, key_column: str, key: str) -> tuple[str, builtins.list[Any]]:
        """The rows of this table a membership table links to `key` (its `key_column`): the
        books on a shelf, the tags of a book."""
        if link.id_from is None or key_column not in link.id_from:
            raise ValueError(f"{link.name} does not link rows by {key_column}")
        other = next(
            c
            for c in link.id_from
            if c != key_column and link.column(c).references == self.table.name
        )
        order = Query().order(self.table, self.record.sort_column, alias="t")
        sql = (
            f'SELECT t.* FROM "{self.table.name}" AS t JOIN "{link.name}" AS l'
            f' ON l."{other}" = t.id WHERE l."{key_column}" = ? ORDER BY {order}'
        )
        return sql, [key]

    def _query(self, query: Query | None, filters: Mapping[str, Any]) -> Query:
        if query is not None:
            if filters:
                raise TypeError("give a query or filters, not both")
            return query
        options = {k: v for k, v in filters.items() if k in _QUERY_OPTIONS}
        where = {k: v for k, v in filters.items() if k not in _QUERY_OPTIONS}
        for name in where:
            if name not in (ID, OWNER):
                self.table.column(name)
        return Query(where=where, **options)
