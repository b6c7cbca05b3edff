"""The sync contract of every declared table, through the whole stack: Python clients writing
plain SQL to their local databases, the API, PostgreSQL, the development sync service and back.

Rows come from the declarations, so a new table is covered without new test code: round trip
(insert, update, delete reach PostgreSQL normalised and every device), another reader's row
refused, unknown fields refused, bad references refused, a parent's delete reaching every
device's children. Valid rows go through the local database; deliberately invalid uploads go
straight to the API with a device's token (the local schema has no unknown columns, and the
client refuses invalid writes before they queue).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from papyrus import contract
from papyrus.contract import OnDelete
from tests.client.conftest import eventually
from tests.client.library import (
    Key,
    barrier,
    converged,
    delete,
    devices,
    keys,
    local_rejections,
    normal_value,
    owner_of,
    puts,
    register,
    server_rejections,
    server_rows,
    update,
    upload_as,
    upload_with,
    wanted,
    write,
)
from tests.client.stack import Stack
from tests.server.sync.rows import Row, chain, patchable, value

TABLES = [t.name for t in contract.TABLES]
REFERENCES = [(t.name, c.name) for t in contract.TABLES for c in t.references]


def cascade(rows: list[Row], want: dict[Key, Any], gone: Key) -> None:
    """`want` after the row `gone` is deleted, as the declarations say: rows pointing at a
    deleted row are deleted too (`CASCADE`) or lose the reference (`SET_NULL`)."""
    want[gone] = None
    deleted = {gone}
    changed = True
    while changed:
        changed = False
        for row in rows:
            key = (row.table.name, row.id)
            current = want.get(key)
            if current is None:
                continue
            for column in row.table.references:
                target = (column.references, current[column.name])
                if current[column.name] is None or target not in deleted:
                    continue
                if column.on_delete is OnDelete.CASCADE:
                    want[key] = None
                    deleted.add(key)
                else:
                    want[key] = {**current, column.name: None}
                changed = True
                break


@pytest.mark.parametrize("table_name", TABLES)
def test_rows_written_locally_round_trip_through_the_stack(stack: Stack, table_name: str) -> None:
    a, b = devices(stack, "a", "b")
    owner = owner_of(a)
    table = contract.table(table_name)
    full = chain(table, closed=True)  # every column set, with the rows it references
    rows = full + chain(table, variant=1)  # and an open one to change (tables with `closed_by`)
    write(a, rows)
    want: dict[Key, Any] = wanted(rows, owner)
    eventually(lambda: converged(stack, owner, want, [a, b]))

    row = rows[-1]
    key = (table_name, row.id)
    column = patchable(table)
    if column is None:  # nothing a client may change: only its writable columns are immutable
        assert all(c.immutable for c in table.writable_columns), table_name
    else:
        new = value(column, 2) if value(column, 2) != row.data[column.name] else value(column, 0)
        update(a, table, row.id, {column.name: new})
        want[key] = {**want[key], column.name: normal_value(column, new)}
        eventually(lambda: converged(stack, owner, want, [a, b]))

    delete(a, table, row.id)
    want[key] = None
    eventually(lambda: converged(stack, owner, want, [a, b]))
    assert stack.sql(
        "SELECT count(*) FROM sync_tombstones WHERE table_name = %s AND row_id = %s",
        (table_name, row.id),
    ) == [(1,)]
    assert local_rejections(a) == [] and server_rejections(a) == []


@pytest.mark.parametrize("table_name", TABLES)
def test_another_readers_row_is_refused(stack: Stack, table_name: str) -> None:
    [a] = devices(stack, "a")
    owner = owner_of(a)
    table = contract.table(table_name)
    other = register(stack)
    theirs_rows = chain(table)
    result = upload_with(stack.api_url, other["access_token"], puts(theirs_rows))
    assert result == {"status": "applied", "applied": len(theirs_rows)}
    theirs = theirs_rows[-1]
    before = server_rows(stack, other["user"]["id"])

    column = patchable(table)
    changes = {column.name: value(column, 2)} if column is not None else {}
    for attack in (theirs.entry("PUT"), theirs.entry("PATCH", changes), theirs.entry("DELETE")):
        result = upload_as(a, [attack])
        assert result["status"] == "rejected", (attack["op"], result)
        assert ("forbidden", theirs.id) in [(r["code"], r["id"]) for r in result["rejections"]]
    listed = server_rejections(a)
    for op in ("PUT", "PATCH", "DELETE"):
        assert (op, theirs.id, "forbidden") in listed, op

    if table.id_from is None:
        # Through the device's queue: its own valid rows, one of them under the other reader's
        # id. The whole transaction is refused, recorded on the device, and undone there.
        mine = chain(table)
        local = [*mine[:-1], Row(table, theirs.id, mine[-1].data)]
        write(a, local)
        eventually(lambda: ("PUT", theirs.id, "forbidden") in local_rejections(a))
        eventually(lambda: converged(stack, owner, dict.fromkeys(keys(local)), [a]))
        assert a.pending_changes() == 0
        assert ("PUT", theirs.id, "forbidden") in server_rejections(a)
    assert server_rows(stack, other["user"]["id"]) == before


@pytest.mark.parametrize("table_name", TABLES)
def test_an_unknown_field_is_refused(stack: Stack, table_name: str) -> None:
    [a] = devices(stack, "a")
    owner = owner_of(a)
    rows = chain(table_name)
    row = rows[-1]
    entries = [*puts(rows[:-1]), row.entry(data={**row.data, "colour_of_sky": "blue"})]
    result = upload_as(a, entries)
    assert result["status"] == "rejected" and result["applied"] == 0
    [rejection] = result["rejections"]
    assert (rejection["code"], rejection["id"]) == ("unknown_field", row.id)
    assert "colour_of_sky" in rejection["message"]
    assert ("PUT", row.id, "unknown_field") in server_rejections(a)
    barrier(stack, a)  # anything the server had stored would have reached the device by now
    assert converged(stack, owner, dict.fromkeys(keys(rows)), [a])


@pytest.mark.parametrize(("table_name", "column_name"), REFERENCES)
def test_a_bad_reference_is_refused(stack: Stack, table_name: str, column_name: str) -> None:
    [a] = devices(stack, "a")
    owner = owner_of(a)
    table = contract.table(table_name)
    parent_table = table.column(column_name).references
    assert parent_table is not None
    other = register(stack)
    others = chain(parent_table, root=True)
    upload_with(stack.api_url, other["access_token"], puts(others))
    before = server_rows(stack, other["user"]["id"])
    tried: list[Row] = []
    for target in (str(uuid.uuid4()), others[-1].id):  # nobody's row; another reader's row
        rows = chain(table)
        data = {**rows[-1].data, column_name: target}
        bad = Row(table, table.derived_id(data) or rows[-1].id, data)
        result = upload_as(a, [*puts(rows[:-1]), bad.entry()])
        assert result["status"] == "rejected", result
        assert {(r["code"], r["id"]) for r in result["rejections"]} == {
            ("invalid_reference", bad.id)
        }
        assert result["rejections"][0]["message"].startswith(f"{column_name}:")
        assert ("PUT", bad.id, "invalid_reference") in server_rejections(a)
        tried += [*rows[:-1], bad]
    barrier(stack, a)
    assert converged(stack, owner, dict.fromkeys(keys(tried)), [a])
    assert server_rows(stack, other["user"]["id"]) == before


@pytest.mark.parametrize(("table_name", "column_name"), REFERENCES)
def test_a_parents_delete_reaches_every_device(
    stack: Stack, table_name: str, column_name: str
) -> None:
    a, b = devices(stack, "a", "b")
    owner = owner_of(a)
    table = contract.table(table_name)
    rows = chain(table)
    write(a, rows)
    want: dict[Key, Any] = wanted(rows, owner)
    eventually(lambda: converged(stack, owner, want, [a, b]))

    child = rows[-1]
    parent = next(r for r in rows if r.id == child.data[column_name])
    delete(a, parent.table, parent.id)  # only the parent, locally; the server does the rest
    cascade(rows, want, (parent.table.name, parent.id))
    if table.column(column_name).on_delete is OnDelete.CASCADE:
        assert want[(table_name, child.id)] is None
    else:
        assert want[(table_name, child.id)][column_name] is None
    eventually(lambda: converged(stack, owner, want, [a, b]))
