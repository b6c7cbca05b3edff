"""The database enforces the declarations too, even for writes outside the upload path: every
derived CHECK constraint refuses a bad value, references only reach rows of the same owner,
unique keys hold ignoring case."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from papyrus import contract
from papyrus.contract import JsonObject, Location, StringList, Table, Type
from papyrus.server.sync.models import checks
from tests.server.sync.rows import Row, chain


def make_user(sql) -> str:
    user_id = str(uuid.uuid4())
    sql(
        "INSERT INTO users (id, email, email_verified, display_name) VALUES (%s, %s, false, 'x')",
        (user_id, f"{user_id}@example.com"),
    )
    return user_id


def insert(sql, owner: str, row: Row, **overrides: Any) -> None:
    row_id = overrides.pop("id", row.id)
    data = {**row.data, **overrides}
    columns = ["id", "owner_user_id", *data]
    values = [row_id, owner] + [
        Jsonb(v) if isinstance(v, dict | list) else v for v in data.values()
    ]
    placeholders = ", ".join(["%s"] * len(columns))
    sql(f"INSERT INTO {row.table.name} ({', '.join(columns)}) VALUES ({placeholders})", values)


def bad_values(table: Table) -> dict[str, dict[str, Any]]:
    """For each derived check of `table`, values that break it (and only it, alphabetically
    first: PostgreSQL tests CHECK constraints in name order)."""
    bad: dict[str, dict[str, Any]] = {}
    if table.id_from:
        bad["id_pair"] = {"id": f"{uuid.uuid4()}:{uuid.uuid4()}"}
    for column in table.columns:
        name = column.name
        if column.choices:
            bad[f"{name}_choices"] = {name: "?"}
        elif column.length is not None and column.length[0] > 0:
            bad[f"{name}_length"] = {name: "x" * (column.length[0] - 1)}
        if column.pattern is not None:
            bad[f"{name}_pattern"] = {name: "~" * column.length[1] if column.length else "~"}
        if column.range is not None:
            low, high = column.range
            bad[f"{name}_range"] = {name: low - 1 if column.type is Type.INTEGER else high + 1}
        if isinstance(column.json, StringList):
            bad[f"{name}_shape"] = {name: {"not": "a list"}}
        elif isinstance(column.json, JsonObject):
            bad[f"{name}_shape"] = {name: ["not", "an object"]}
        elif isinstance(column.json, Location):
            bad[f"{name}_shape"] = {name: {}}
    for rule in table.checks:
        bad[f"{rule.earlier}_before_{rule.later}"] = {
            rule.earlier: "2026-02-01T00:00:00+00:00",
            rule.later: "2026-01-01T00:00:00+00:00",
        }
    return bad


CASES = [
    (table.name, check, values)
    for table in contract.TABLES
    for check, values in bad_values(table).items()
]


def test_every_derived_check_is_probed() -> None:
    for table in contract.TABLES:
        assert set(bad_values(table)) == set(checks(table)), table.name


@pytest.mark.parametrize(("table_name", "check", "values"), CASES)
def test_the_database_refuses_what_the_declarations_refuse(
    sql, table_name: str, check: str, values: dict[str, Any]
) -> None:
    owner = make_user(sql)
    rows = chain(table_name, closed=True)
    for parent in rows[:-1]:
        insert(sql, owner, parent)
    with pytest.raises(psycopg.errors.CheckViolation) as excinfo:
        insert(sql, owner, rows[-1], **values)
    assert excinfo.value.diag.constraint_name == f"ck_{table_name}_{check}"
    insert(sql, owner, rows[-1])  # without the bad values, the same row goes in


@pytest.mark.parametrize(
    "location",
    [{"line": 3}, {"fraction": 1.5}, {"fraction": -0.1}, {"page": -1}, {"cfi": 5}, [], Jsonb("p")],
)
def test_locations_are_checked_in_depth(sql, location: Any) -> None:
    owner = make_user(sql)
    *parents, row = chain("bookmarks")
    for parent in parents:
        insert(sql, owner, parent)
    with pytest.raises(psycopg.errors.CheckViolation):
        insert(sql, owner, row, location=location)


@pytest.mark.parametrize("co_authors", [[1], ["a"] * 101, Jsonb("Eliot")])
def test_string_lists_are_checked_in_depth(sql, co_authors: Any) -> None:
    owner = make_user(sql)
    *parents, row = chain("books")
    for parent in parents:
        insert(sql, owner, parent)
    with pytest.raises(psycopg.errors.CheckViolation):
        insert(sql, owner, row, co_authors=co_authors)


REFERENCES = [(t.name, c.name) for t in contract.TABLES for c in t.references]


@pytest.mark.parametrize(("table_name", "column"), REFERENCES)
def test_a_reference_to_another_users_row_is_refused_by_the_database(
    sql, table_name: str, column: str
) -> None:
    alice, bob = make_user(sql), make_user(sql)
    rows = chain(table_name)
    for parent in rows[:-1]:
        insert(sql, alice, parent)
    parent_table = contract.table(table_name).column(column).references
    bobs = chain(parent_table, root=True)
    for row in bobs:
        insert(sql, bob, row)
    child = rows[-1]
    data = {**child.data, column: bobs[-1].id}
    row_id = child.table.derived_id(data) or child.id
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        insert(sql, alice, Row(child.table, row_id, data))


def test_unique_keys_ignore_case_per_owner(sql) -> None:
    alice, bob = make_user(sql), make_user(sql)
    for table in contract.TABLES:
        for unique in table.unique:
            [row] = chain(table)[-1:]
            first = {
                c: "Sci-Fi" if table.column(c).type is Type.TEXT else row.data[c]
                for c in unique.columns
            }
            insert(sql, alice, Row(table, str(uuid.uuid4()), {**row.data, **first}))
            insert(sql, bob, Row(table, str(uuid.uuid4()), {**row.data, **first}))
            shouted = {c: v.upper() if isinstance(v, str) else v for c, v in first.items()}
            with pytest.raises(psycopg.errors.ExclusionViolation):
                insert(sql, alice, Row(table, str(uuid.uuid4()), {**row.data, **shouted}))
