"""The whole library through the development sync service: every declared table replicated
with the real service's value conversions, one bucket per table, each holding one user's rows."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from papyrus.contract import TABLES, TABLES_BY_NAME, JsonObject, Location, StringList, Table, Type
from papyrus.devsync.sync_rules import load_sync_config
from papyrus.devsync.values import decode_value
from tests.conftest import SYNC_CONFIG
from tests.e2e.node_client import NODE_SDK

from .conftest import SourceDb
from .test_stream import StreamClient, request_body

ALICE = "11111111-1111-4111-8111-111111111111"
BOB = "22222222-2222-4222-8222-222222222222"

# One value per logical type as written to PostgreSQL, and as the real service syncs it
# (powersync-ja/powersync-service: packages/jpgwire/src/pgwire_types.ts and util.ts; edition 2+
# renders timestamps as ISO 8601 in UTC with microseconds).
TIMESTAMP = ("2026-03-01 10:00:00.5+02", "2026-03-01T08:00:00.500000Z")
DATE = ("2026-01-05", "2026-01-05")


def _json_value(column: Any) -> Any:
    if isinstance(column.json, StringList):
        return ["Ursula K. Le Guin", "Brian Herbert"]
    if isinstance(column.json, Location):
        return {"fraction": 0.25, "cfi": "epubcfi(/6/4!/4/2/1:0)", "page": 12}
    assert isinstance(column.json, JsonObject)
    return {"source": "import", "tags": [1, 2.5, None]}


def full_row(table: Table, owner: str, parents: dict[str, str]) -> dict[str, Any]:
    """A row with every declared column set (references to `parents`, a table -> id map)."""
    row: dict[str, Any] = {"owner_user_id": owner}
    for column in table.columns:
        if column.references is not None:
            row[column.name] = parents.get(column.references)  # a self-reference stays NULL
        elif column.type is Type.TEXT:
            row[column.name] = (
                column.choices[-1]
                if column.choices
                else "#a0B1c2"
                if column.pattern
                else f"{column.name} é ✓"
            )
        elif column.type is Type.INTEGER:
            row[column.name] = 3
        elif column.type is Type.REAL:
            row[column.name] = 0.25
        elif column.type is Type.BOOLEAN:
            row[column.name] = True
        elif column.type is Type.JSON:
            row[column.name] = json.dumps(_json_value(column))
        elif column.type is Type.TIMESTAMP:
            row[column.name] = TIMESTAMP[0]
        elif column.type is Type.DATE:
            row[column.name] = DATE[0]
    first, second = table.id_from or (None, None)
    row["id"] = f"{row[first]}:{row[second]}" if first and second else str(uuid.uuid4())
    return row


def insert(db: SourceDb, table: Table, row: dict[str, Any]) -> None:
    db.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table.name),
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)),
        ),
        list(row.values()),
    )


def library(db: SourceDb, owner: str) -> dict[str, dict[str, Any]]:
    """One full row in every declared table for `owner`, parents first."""
    rows: dict[str, dict[str, Any]] = {}
    for table in TABLES:
        row = full_row(table, owner, {name: r["id"] for name, r in rows.items()})
        insert(db, table, row)
        rows[table.name] = row
    return rows


def synced(db: SourceDb, table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """What the real service puts in a PUT's data for `row`, column by column."""
    out: dict[str, Any] = {"id": row["id"], "owner_user_id": row["owner_user_id"]}
    for column in table.columns:
        value = row[column.name]
        if value is None:
            out[column.name] = None
        elif column.type is Type.BOOLEAN:
            out[column.name] = 1 if value else 0
        elif column.type is Type.JSON:  # jsonb's own text form, cast to text
            out[column.name] = db.fetchall("SELECT %s::jsonb::text", (value,))[0][0]
        elif column.type is Type.TIMESTAMP:
            out[column.name] = TIMESTAMP[1]
        elif column.type is Type.DATE:
            out[column.name] = DATE[1]
        else:
            out[column.name] = value
    return out


def bucket(table: str, user: str) -> str:
    return f'1#{table}|0["{user}"]'


def test_every_table_replicates_with_the_service_value_formats(
    source_db: SourceDb, start_replicator
) -> None:
    rows = library(source_db, ALICE)
    start_replicator(rules=load_sync_config(SYNC_CONFIG))
    ops = {op[1]: op for op in source_db.ops()}
    assert set(ops) == {bucket(t.name, ALICE) for t in TABLES}, "one bucket per table"
    for table in TABLES:
        _, _, op, object_id, _, data, _ = ops[bucket(table.name, ALICE)]
        assert (op, object_id) == ("PUT", rows[table.name]["id"])
        expected = synced(source_db, table, rows[table.name])
        assert json.loads(data) == expected, table.name
        assert list(json.loads(data)) == list(expected), "columns in the declared order"
    books = json.loads(ops[bucket("books", ALICE)][5])
    assert books["is_favorite"] == 1 and books["current_position"] == 0.25
    assert books["custom_metadata"] == '{"tags": [1, 2.5, null], "source": "import"}'
    assert books["started_at"] == "2026-03-01T08:00:00.500000Z"
    goals = json.loads(ops[bucket("reading_goals", ALICE)][5])
    assert goals["period_start"] == "2026-01-05" and goals["active"] == 1
    membership = rows["book_shelves"]
    assert membership["id"] == f"{rows['books']['id']}:{rows['shelves']['id']}"


@pytest.fixture
def streams() -> Iterator[Any]:
    opened: list[StreamClient] = []

    def open_stream(url: str, token: str, body: dict | None = None) -> StreamClient:
        client = StreamClient(url, token, body)
        opened.append(client)
        return client

    yield open_stream
    for client in opened:
        client.close()


def test_each_user_gets_a_bucket_per_table_with_only_their_rows_and_deletes_cascade(
    source_db: SourceDb, start_service, signer_session, streams
) -> None:
    alice_rows = library(source_db, ALICE)
    bob_book = full_row(TABLES_BY_NAME["books"], BOB, {})
    insert(source_db, TABLES_BY_NAME["books"], bob_book)
    service = start_service(sync_config_path=SYNC_CONFIG)
    alice = streams(service.url, signer_session.token(ALICE))
    bob = streams(service.url, signer_session.token(BOB), request_body("client-bob"))

    checkpoint, *data, _ = alice.until_complete()
    buckets = checkpoint["checkpoint"]["buckets"]
    assert [b["bucket"] for b in buckets] == [bucket(t.name, ALICE) for t in TABLES]
    assert all(b["count"] == 1 for b in buckets)
    assert checkpoint["checkpoint"]["streams"] == [
        {"name": t.name, "is_default": True, "errors": []} for t in TABLES
    ]
    received = {
        (op["object_type"], op["object_id"]) for line in data for op in line["data"]["data"]
    }
    assert received == {(name, row["id"]) for name, row in alice_rows.items()}

    checkpoint, *data, _ = bob.until_complete()
    counts = {b["bucket"]: b["count"] for b in checkpoint["checkpoint"]["buckets"]}
    assert counts == {bucket(t.name, BOB): int(t.name == "books") for t in TABLES}
    (page,) = [line["data"] for line in data]
    assert [op["object_id"] for op in page["data"]] == [bob_book["id"]]

    # Deleting the book removes its highlights, notes, bookmarks, memberships and sessions on
    # the server (ON DELETE CASCADE), and every one of those deletes reaches Alice's device.
    source_db.execute("DELETE FROM books WHERE id = %s", (alice_rows["books"]["id"],))
    removed: set[tuple[str, str]] = set()
    children = {
        "books",
        "book_shelves",
        "book_tags",
        "annotations",
        "notes",
        "bookmarks",
        "reading_sessions",
    }
    while len(removed) < len(children):
        for line in alice.until_complete():
            for op in line.get("data", {}).get("data", []):
                assert op["op"] == "REMOVE"
                removed.add((op["object_type"], op["object_id"]))
    assert removed == {(name, alice_rows[name]["id"]) for name in children}
    assert bob.quiet_for(0.3), "Bob sees none of Alice's changes"


def decoded(db: SourceDb, table: str, row_id: str) -> dict[str, Any]:
    """The row as replication hands it to the sync config: each column's text form (the
    replication session's TimeZone and DateStyle) decoded by its type, as pgoutput delivers it."""
    with psycopg.connect(db.conninfo, options="-c TimeZone=UTC -c DateStyle=ISO") as conn:
        columns = conn.execute(
            "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        ).fetchall()
        texts = conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE id::text = %s").format(
                sql.SQL(", ").join(
                    sql.SQL("{}::text").format(sql.Identifier(c)) for c, _ in columns
                ),
                sql.Identifier(table),
            ),
            (row_id,),
        ).fetchone()
    assert texts is not None
    return {name: decode_value(text, oid) for (name, oid), text in zip(columns, texts, strict=True)}


def _engine_value(value: Any) -> Any:
    return {"$int": str(value)} if isinstance(value, int) and not isinstance(value, bool) else value


@pytest.mark.node
def test_rows_evaluate_exactly_as_the_service_engine_evaluates_them(source_db: SourceDb) -> None:
    """Bucket, object and the exact data text (which the checksums hash) for a full row of
    every table and a sparse book, from the devsync evaluator and the service's own engine."""
    rows = library(source_db, ALICE)
    sparse = {"id": str(uuid.uuid4()), "owner_user_id": BOB, "title": "Only a title"}
    insert(source_db, TABLES_BY_NAME["books"], sparse)
    inputs = [(t.name, decoded(source_db, t.name, rows[t.name]["id"])) for t in TABLES]
    inputs.append(("books", decoded(source_db, "books", sparse["id"])))
    text = SYNC_CONFIG.read_text()
    config = load_sync_config(SYNC_CONFIG)
    ours = [
        [
            {"bucket": e.bucket, "table": e.object_type, "id": e.object_id, "data": e.data}
            for e in config.evaluate("public", name, record)
        ]
        for name, record in inputs
    ]
    payload = {
        "yaml": text,
        "rows": [
            {"table": name, "record": {k: _engine_value(v) for k, v in record.items()}}
            for name, record in inputs
        ],
    }
    done = subprocess.run(
        ["node", str(NODE_SDK / "evaluate-rows.mjs")],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=NODE_SDK,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout)
    assert len(ours) == len(TABLES) + 1 and all(len(evaluated) == 1 for evaluated in ours)
    assert ours == theirs
