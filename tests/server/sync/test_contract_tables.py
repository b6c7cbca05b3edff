"""One contract suite over every synced table, generated from the declarations: a new table is
covered without new test code. Through the HTTP upload path into PostgreSQL:

round trip (PUT, read back normalised, PATCH, DELETE), another user's row refused, unknown
fields refused, bad references refused, deletes propagate to children, and hostile values
(NUL in every text column, malformed pair ids, oversized JSON) are clear rejections.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from papyrus import contract
from papyrus.contract import OnDelete, Type
from papyrus.server.sync.plan import same
from tests.server.sync.conftest import Reader, transaction, upload
from tests.server.sync.rows import Row, chain, patchable, value

TABLES = [t.name for t in contract.TABLES]
REFERENCES = [(t.name, c.name) for t in contract.TABLES for c in t.references]
TEXT_COLUMNS = [(t.name, c.name) for t in contract.TABLES for c in t.columns if c.type is Type.TEXT]
JSON_COLUMNS = [(t.name, c.name) for t in contract.TABLES for c in t.columns if c.type is Type.JSON]
PAIR_TABLES = [t.name for t in contract.TABLES if t.id_from]


def stored(sql, table: str, row_id: str) -> dict[str, Any] | None:
    rows = sql(f"SELECT to_jsonb(t) FROM {table} t WHERE id::text = %s", (row_id,))
    return rows[0][0] if rows else None


def put(client: TestClient, reader: Reader, rows: list[Row]) -> dict[str, Any]:
    response = upload(client, reader, transaction(*(r.entry() for r in rows)))
    assert response.status_code == 200, response.text
    return response.json()


def total_rows(sql) -> int:
    return sum(sql(f"SELECT count(*) FROM {name}")[0][0] for name in TABLES)


def assert_stored(sql, row: Row, owner: str) -> dict[str, Any]:
    found = stored(sql, row.table.name, row.id)
    assert found is not None, row.table.name
    assert found["owner_user_id"] == owner
    values, problems = contract.validate_row(row.table, contract.PUT, row.id, row.data)
    assert problems == []
    for column in row.table.columns:
        if column.server_set:
            assert found[column.name] is not None, column.name
        else:
            assert same(column, found[column.name], values.get(column.name)), column.name
    return found


def rejection(result: dict[str, Any]) -> tuple[str, str]:
    assert result["status"] == "rejected", result
    first = result["rejections"][0]
    return first["code"], first["id"]


@pytest.mark.parametrize("table_name", TABLES)
def test_round_trip(client: TestClient, alice: Reader, sql, table_name: str) -> None:
    table = contract.table(table_name)
    full = chain(table, closed=True)  # every column set, references and all
    assert put(client, alice, full) == {"status": "applied", "applied": len(full)}
    for row in full:
        assert_stored(sql, row, alice.user_id)

    rows = chain(table, variant=1)  # an open row (for tables with `closed_by`)
    assert put(client, alice, rows)["status"] == "applied"
    row = rows[-1]
    column = patchable(table)
    if column is None:  # nothing a client may change: only its writable columns are immutable
        assert all(c.immutable for c in table.writable_columns), table_name
    else:
        new = value(column, 2) if value(column, 2) != row.data[column.name] else value(column, 0)
        result = upload(client, alice, transaction(row.entry("PATCH", {column.name: new})))
        assert result.json() == {"status": "applied", "applied": 1}
        after = assert_stored(
            sql, Row(table, row.id, {**row.data, column.name: new}), alice.user_id
        )
        assert same(column, after[column.name], new)

    result = upload(client, alice, transaction(row.entry("DELETE")))
    assert result.json() == {"status": "applied", "applied": 1}
    assert stored(sql, table_name, row.id) is None
    assert sql(
        "SELECT count(*) FROM sync_tombstones WHERE user_id = %s AND table_name = %s "
        "AND row_id = %s",
        (alice.user_id, table_name, row.id),
    ) == [(1,)]


@pytest.mark.parametrize("table_name", TABLES)
def test_another_users_row_is_refused(
    client: TestClient, alice: Reader, bob: Reader, sql, table_name: str
) -> None:
    table = contract.table(table_name)
    bobs = chain(table)
    put(client, bob, bobs)
    theirs = bobs[-1]
    before = stored(sql, table_name, theirs.id)
    column = patchable(table)
    changes = {column.name: theirs.data[column.name]} if column else {}
    for attack in (
        theirs.entry("PUT"),
        theirs.entry("PATCH", changes),
        theirs.entry("DELETE"),
    ):
        result = upload(client, alice, transaction(attack)).json()
        assert ("forbidden", theirs.id) in [(r["code"], r["id"]) for r in result["rejections"]]
        assert stored(sql, table_name, theirs.id) == before

    mine = chain(table)
    entries = [r.entry() for r in mine[:-1]]
    entries.append(mine[-1].entry(data={**mine[-1].data, "owner_user_id": bob.user_id}))
    result = upload(client, alice, transaction(*entries)).json()
    assert rejection(result) == ("owner_mismatch", mine[-1].id)
    assert stored(sql, table_name, mine[-1].id) is None


@pytest.mark.parametrize("table_name", TABLES)
def test_unknown_field_is_refused(client: TestClient, alice: Reader, sql, table_name: str) -> None:
    rows = chain(table_name)
    before = total_rows(sql)
    entries = [r.entry() for r in rows[:-1]]
    entries.append(rows[-1].entry(data={**rows[-1].data, "colour_of_sky": "blue"}))
    result = upload(client, alice, transaction(*entries)).json()
    assert rejection(result) == ("unknown_field", rows[-1].id)
    assert "colour_of_sky" in result["rejections"][0]["message"]
    assert total_rows(sql) == before


@pytest.mark.parametrize(("table_name", "column_name"), REFERENCES)
def test_bad_reference_is_refused(
    client: TestClient, alice: Reader, bob: Reader, sql, table_name: str, column_name: str
) -> None:
    table = contract.table(table_name)
    parent_table = table.column(column_name).references
    assert parent_table is not None
    bobs = chain(parent_table, root=True)
    put(client, bob, bobs)
    before = total_rows(sql)
    for target in (str(uuid.uuid4()), bobs[-1].id):  # nobody's row; another user's row
        rows = chain(table)
        child = rows[-1]
        data = {**child.data, column_name: target}
        row_id = table.derived_id(data) or child.id
        entries = [r.entry() for r in rows[:-1]] + [Row(table, row_id, data).entry()]
        result = upload(client, alice, transaction(*entries)).json()
        assert rejection(result) == ("invalid_reference", row_id), result
        assert result["rejections"][0]["message"].startswith(f"{column_name}:")
        assert total_rows(sql) == before


@pytest.mark.parametrize(("table_name", "column_name"), REFERENCES)
def test_deleting_a_referenced_row_propagates(
    client: TestClient, alice: Reader, sql, table_name: str, column_name: str
) -> None:
    table = contract.table(table_name)
    column = table.column(column_name)
    rows = chain(table)
    put(client, alice, rows)
    child = rows[-1]
    parent = next(r for r in rows if r.id == child.data[column_name])
    result = upload(client, alice, transaction(parent.entry("DELETE")))
    assert result.json() == {"status": "applied", "applied": 1}
    after = stored(sql, table_name, child.id)
    if column.on_delete is OnDelete.CASCADE:
        assert after is None
        tombstone = sql(
            "SELECT 1 FROM sync_tombstones WHERE user_id = %s AND table_name = %s AND row_id = %s",
            (alice.user_id, table_name, child.id),
        )
        assert tombstone == [(1,)], "a cascaded delete leaves a tombstone too"
    else:
        assert after is not None and after[column_name] is None


@pytest.mark.parametrize(("table_name", "column_name"), TEXT_COLUMNS)
def test_nul_in_any_text_column_is_a_clear_rejection(
    client: TestClient, alice: Reader, sql, table_name: str, column_name: str
) -> None:
    rows = chain(table_name)
    row = rows[-1]
    entries = [r.entry() for r in rows[:-1]]
    entries.append(row.entry(data={**row.data, column_name: "a\x00b"}))
    result = upload(client, alice, transaction(*entries)).json()
    assert rejection(result) == ("invalid_value", row.id)
    assert result["rejections"][0]["message"].startswith(f"{column_name}:")
    assert total_rows(sql) == 0


@pytest.mark.parametrize("table_name", PAIR_TABLES)
def test_membership_ids_of_the_wrong_shape_are_refused(
    client: TestClient, alice: Reader, sql, table_name: str
) -> None:
    table = contract.table(table_name)
    rows = chain(table)
    row = rows[-1]
    first, second = (row.data[name] for name in table.id_from or ())
    put(client, alice, rows[:-1])
    before = total_rows(sql)
    for bad in (
        first,
        f"{first}:",
        f"{first}:{second}:{second}",
        f"{first}:not-a-uuid",
        f"{first};{second}",
        "x" * 500,
    ):
        result = upload(client, alice, transaction(Row(table, bad, row.data).entry())).json()
        assert rejection(result)[0] == "invalid_id", bad
    swapped = f"{second}:{first}"
    result = upload(client, alice, transaction(Row(table, swapped, row.data).entry())).json()
    assert rejection(result) == ("invalid_id", swapped)
    assert total_rows(sql) == before


def _huge(column: contract.Column) -> Any:
    shape = column.json
    if isinstance(shape, contract.StringList):
        return ["x"] * (shape.max_items + 1)
    if isinstance(shape, contract.JsonObject):
        return {f"k{i}": "v" * 100 for i in range(shape.max_bytes // 100 + 1)}
    return {"cfi": "c" * 100_000}


@pytest.mark.parametrize(("table_name", "column_name"), JSON_COLUMNS)
def test_oversized_json_is_a_clear_rejection(
    client: TestClient, alice: Reader, sql, table_name: str, column_name: str
) -> None:
    table = contract.table(table_name)
    rows = chain(table)
    row = rows[-1]
    entries = [r.entry() for r in rows[:-1]]
    entries.append(row.entry(data={**row.data, column_name: _huge(table.column(column_name))}))
    result = upload(client, alice, transaction(*entries)).json()
    assert rejection(result) == ("invalid_value", row.id)
    assert total_rows(sql) == 0
