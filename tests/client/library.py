"""Helpers for whole-stack tests of the reading library: devices of one reader, raw SQL writes
through their local databases, and every table's rows as PostgreSQL, each device and the Node
SDK hold them, normalised so that they compare.

Rows come from the declarations (`tests.server.sync.rows`), so a new table is covered without
new test code. Local writes are valid rows written with plain SQL, as an app would; anything
deliberately invalid goes straight to the API with a device's token.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from psycopg import sql as pgsql

from papyrus import contract
from papyrus.client import AuthProvider, PowerSyncDatabase
from papyrus.contract import ID, OWNER, Column, Table, Type
from tests.client.conftest import eventually
from tests.client.stack import Stack
from tests.server.sync.rows import Row, chain

PASSWORD = "correct horse battery"
UPLOAD = "/v1/sync/powersync-upload"

Key = tuple[str, str]  # (table name, row id)
Rows = dict[Key, dict[str, Any]]  # normalised rows by key


# --- devices -------------------------------------------------------------------------------------


def devices(stack: Stack, *names: str) -> list[AuthProvider]:
    """One new reader signed in on a device per name, each synced once."""
    email = f"reader-{uuid.uuid4().hex[:8]}@example.com"
    first = stack.client(names[0])
    first.register(email, PASSWORD, "Reader")
    rest = [stack.client(name) for name in names[1:]]
    for device in rest:
        device.sign_in(email, PASSWORD)
    for device in (first, *rest):
        assert device.database.wait_for_first_sync(20), "first sync"
    return [first, *rest]


def owner_of(device: AuthProvider) -> str:
    assert device.user is not None
    return device.user.id


def go_offline(device: AuthProvider) -> None:
    """The device stops syncing: its writes queue, nothing uploads or downloads."""
    device.powersync.disconnect()
    assert not device.database.connected


def go_online(device: AuthProvider) -> None:
    device.powersync.connect()


# --- local writes (valid rows, plain SQL, as an app writes them) -------------------------------


def insert(db: PowerSyncDatabase, row: Row, owner: str) -> None:
    columns = [ID, OWNER, *row.data]
    values = [
        row.id,
        owner,
        *(contract.to_local(row.table.column(n), v) for n, v in row.data.items()),
    ]
    db.execute(
        f"INSERT INTO {row.table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})",
        values,
    )


def write(device: AuthProvider, rows: Iterable[Row]) -> None:
    """Inserts `rows` (parents first) in one local transaction: one upload."""
    owner = owner_of(device)
    with device.database.write_transaction() as db:
        for row in rows:
            insert(db, row, owner)


def update(device: AuthProvider, table: Table, row_id: str, changes: Mapping[str, Any]) -> None:
    assignments = ", ".join(f"{name} = ?" for name in changes)
    values = [contract.to_local(table.column(n), v) for n, v in changes.items()]
    device.database.execute(
        f"UPDATE {table.name} SET {assignments} WHERE id = ?", [*values, row_id]
    )


def delete(device: AuthProvider, table: Table, row_id: str) -> None:
    device.database.execute(f"DELETE FROM {table.name} WHERE id = ?", [row_id])


# --- what each side holds, normalised -----------------------------------------------------------


def normal_value(column: Column, value: Any) -> Any:
    """One value in the contract's normal form, whichever side it was read from (PostgreSQL's
    `to_jsonb`, SQLite's encoding, or an upload's data), timestamps in UTC."""
    if value is None:
        return None
    normal = contract.check_value(column, contract.from_local(column, value))
    if column.type is Type.TIMESTAMP:  # PostgreSQL keeps the instant, not the offset written
        return datetime.fromisoformat(normal).astimezone(UTC).isoformat()
    return normal


def normal_row(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared column of a row (stamps included), plus its id and owner."""
    out = {ID: str(row[ID]), OWNER: str(row[OWNER]) if row.get(OWNER) else None}
    for column in table.columns:
        out[column.name] = normal_value(column, row.get(column.name))
    return out


def expected(row: Row, owner: str) -> dict[str, Any]:
    """What the stack should hold for a row this test wrote: its values normalised as the
    contract does (declared defaults filled), without the server's stamps."""
    values, problems = contract.validate_row(row.table, contract.PUT, row.id, row.data)
    assert problems == [], problems
    out = {ID: row.id, OWNER: owner}
    for column in row.table.columns:
        if not column.server_set:
            out[column.name] = normal_value(column, values.get(column.name))
    return out


def wanted(rows: Iterable[Row], owner: str) -> dict[Key, dict[str, Any] | None]:
    return {(row.table.name, row.id): expected(row, owner) for row in rows}


def server_rows(stack: Stack, owner: str) -> Rows:
    """Every synced row of `owner` in PostgreSQL (one connection for all tables)."""
    found: Rows = {}
    with psycopg.connect(stack.pg.conninfo(stack.database_name), autocommit=True) as conn:
        for table in contract.TABLES:
            query = pgsql.SQL("SELECT to_jsonb(t) FROM {} AS t WHERE owner_user_id = %s").format(
                pgsql.Identifier(table.name)
            )
            for (row,) in conn.execute(query, (owner,)).fetchall():
                found[(table.name, str(row[ID]))] = normal_row(table, row)
    return found


def local_rows(db: PowerSyncDatabase) -> Rows:
    """Every synced row a device's local database holds."""
    found: Rows = {}
    with db.read_transaction():
        for table in contract.TABLES:
            for row in db.get_all(f"SELECT * FROM {table.name}"):
                found[(table.name, row[ID])] = normal_row(table, row)
    return found


def snapshot_rows(snapshot: Mapping[str, list[dict[str, Any]]]) -> Rows:
    """The rows of the Node harness's `snapshot` command, normalised."""
    found: Rows = {}
    for table in contract.TABLES:
        for row in snapshot[table.name]:
            found[(table.name, row[ID])] = normal_row(table, row)
    return found


def raw_local_rows(db: PowerSyncDatabase) -> dict[str, list[dict[str, Any]]]:
    """Every synced table's rows exactly as the local database returns them, ordered by id."""
    with db.read_transaction():
        return {t.name: db.get_all(f"SELECT * FROM {t.name} ORDER BY id") for t in contract.TABLES}


def without_stamps(row: Mapping[str, Any], table: Table) -> dict[str, Any]:
    stamps = {c.name for c in table.columns if c.server_set}
    return {k: v for k, v in row.items() if k not in stamps}


def differences(want: Mapping[Key, dict[str, Any] | None], have: Rows) -> dict[Key, Any]:
    """Keys whose row in `have` is not `want` (None: must be absent; stamps must be set, their
    values are the server's)."""
    out: dict[Key, Any] = {}
    for key, row in want.items():
        found = have.get(key)
        if row is None:
            if found is not None:
                out[key] = ("present", found)
            continue
        if found is None:
            out[key] = ("missing", row)
            continue
        table = contract.table(key[0])
        if without_stamps(found, table) != row:
            out[key] = ("differs", found, row)
        elif any(found[c.name] is None for c in table.columns if c.server_set):
            out[key] = ("unstamped", found)
    return out


def converged(
    stack: Stack,
    owner: str,
    want: Mapping[Key, dict[str, Any] | None],
    devices: Iterable[AuthProvider] = (),
    others: Iterable[Rows] = (),
) -> bool:
    """PostgreSQL holds `want`, and every device (and every snapshot in `others`) holds exactly
    the server's version of those rows, stamps included. Raises AssertionError with what
    differs, for `eventually` to report."""
    server = server_rows(stack, owner)
    wrong = differences(want, server)
    assert not wrong, ("server", wrong)
    mine = {key: server.get(key) for key in want}
    held = [(str(d.config.device_label), local_rows(d.database)) for d in devices]
    held += [(f"snapshot {n}", rows) for n, rows in enumerate(others)]
    for name, rows in held:
        theirs = {key: rows.get(key) for key in want}
        assert theirs == mine, (
            name,
            {k: (theirs[k], mine[k]) for k in want if theirs[k] != mine[k]},
        )
    return True


# --- the API, directly, with a device's (or anyone's) token --------------------------------------


# Transaction ids of uploads sent straight to the API: each its own (the server lists a
# transaction's rejections once, taking one sent again for a replay), and far from the small
# ids a device's own queue uses.
_TX_IDS = itertools.count(1_000_000)


def batch(*entries: dict[str, Any]) -> list[dict[str, Any]]:
    """Entries numbered like one new client transaction."""
    tx_id = next(_TX_IDS)
    return [{**e, "op_id": i + 1, "tx_id": tx_id} for i, e in enumerate(entries)]


def puts(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [row.entry() for row in rows]


def upload_with(api_url: str, token: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(
        f"{api_url}{UPLOAD}",
        json={"batch": batch(*entries)},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def upload_as(device: AuthProvider, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One transaction sent straight to the API with the device's session (not its queue)."""
    return upload_with(device.config.api_url, device.auth.access_token(), entries)


def register(stack: Stack) -> dict[str, Any]:
    """Another reader, through the API only (no device): the token response."""
    response = httpx.post(
        f"{stack.api_url}/v1/auth/register",
        json={
            "email": f"other-{uuid.uuid4().hex[:8]}@example.com",
            "password": PASSWORD,
            "display_name": "Other",
            "client_type": "cli",
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


def server_rejections(device: AuthProvider) -> list[tuple[str | None, str | None, str]]:
    """(op, row id, code) of every rejected or dropped operation the server lists for the
    device's user (`GET /v1/sync/rejections`)."""
    return [(r["op"], r["row_id"], r["code"]) for r in device.auth.server_rejections()]


def local_rejections(device: AuthProvider) -> list[tuple[str | None, str | None, str | None]]:
    return [(r.op, r.row_id, r.code) for r in device.data_store.rejections()]


def barrier(stack: Stack, writer: AuthProvider, *readers: AuthProvider) -> None:
    """Writes a fresh row on `writer` and waits until the server's version of it is on every
    device: replication is in commit order, so each has then seen everything the server
    committed before it (the writer included: it applied a checkpoint past its upload)."""
    marker = chain(contract.TABLES[0])
    write(writer, marker)
    want = wanted(marker, owner_of(writer))
    eventually(lambda: converged(stack, owner_of(writer), want, [writer, *readers]))


def keys(rows: Iterable[Row]) -> list[Key]:
    return [(row.table.name, row.id) for row in rows]
