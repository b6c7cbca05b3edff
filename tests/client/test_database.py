"""The local database: the upload queue, transactions, change notifications, watch()."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from papyrus.client import (
    ACCOUNT_SCHEMA,
    GUEST_SCHEMA,
    AuthProvider,
    BookRepository,
    Column,
    NotFoundError,
    PapyrusApiConfig,
    PapyrusClientError,
    PowerSyncDatabase,
    Schema,
    SyncStatus,
    Table,
    UploadQueueStats,
)
from tests.client.conftest import FAST
from tests.client.mock_sync import MockConnector, MockSyncService, capture_lines

OpenDb = Callable[..., PowerSyncDatabase]
USER = "11111111-1111-4111-8111-111111111111"
# Valid book ids (writes are checked against the contract at commit, ids included).
B1, A, B, C, D = (f"00000000-0000-4000-8000-{n:012x}" for n in (0xB1, 0xA, 0xB, 0xC, 0xD))


def test_insert_queues_a_put_shaped_like_the_node_sdk(open_db: OpenDb) -> None:
    db = open_db()
    db.execute(
        "INSERT INTO books (id, title, page_count, is_favorite, subtitle) VALUES (?, ?, ?, ?, ?)",
        (B1, "Dune", 412, 1, None),
    )
    tx = db.get_next_crud_transaction()
    assert tx is not None
    assert [e.to_json() for e in tx.crud] == [
        {
            "op_id": 1,
            "op": "PUT",
            "type": "books",
            "id": B1,
            "tx_id": 1,
            "data": {"title": "Dune", "page_count": 412, "is_favorite": 1},
        }
    ]


def test_update_and_delete_queue_patch_and_delete(open_db: OpenDb) -> None:
    db = open_db()
    db.execute("INSERT INTO books (id, title) VALUES (?, 'Dune')", (B1,))
    db.execute("UPDATE books SET title = 'Dune Messiah', rating = NULL WHERE id = ?", (B1,))
    db.execute("DELETE FROM books WHERE id = ?", (B1,))
    batch = db.get_crud_batch()
    assert batch is not None and not batch.have_more
    assert [(e.op, e.op_data) for e in batch.crud] == [
        ("PUT", {"title": "Dune"}),
        ("PATCH", {"title": "Dune Messiah"}),
        ("DELETE", None),
    ]
    assert "data" not in batch.crud[2].to_json()
    batch.complete()
    assert db.get_crud_batch() is None and db.upload_queue_size() == 0


def test_one_write_transaction_uploads_as_one_crud_transaction(open_db: OpenDb) -> None:
    db = open_db()
    with db.write_transaction():
        db.execute("INSERT INTO books (id, title) VALUES (?, 'A')", (A,))
        db.execute("INSERT INTO books (id, title) VALUES (?, 'B')", (B,))
    db.execute("INSERT INTO books (id, title) VALUES (?, 'C')", (C,))
    first = db.get_next_crud_transaction()
    assert first is not None and [e.id for e in first.crud] == [A, B]
    assert first.transaction_id == first.crud[1].transaction_id
    first.complete()
    second = db.get_next_crud_transaction()
    assert second is not None and [e.id for e in second.crud] == [C]


def test_batch_reports_have_more(open_db: OpenDb) -> None:
    db = open_db()
    for i in range(3):
        db.execute("INSERT INTO books (id, title) VALUES (?, 't')", ((A, B, C)[i],))
    batch = db.get_crud_batch(limit=2)
    assert batch is not None and batch.have_more and len(batch.crud) == 2
    batch.complete()
    assert db.upload_queue_size() == 1


def test_guest_database_queues_nothing(open_db: OpenDb) -> None:
    db = open_db("guest.db", GUEST_SCHEMA)
    BookRepository(db).add("Local only")
    assert db.upload_queue_size() == 0 and db.get_next_crud_transaction() is None
    assert [b.title for b in BookRepository(db).list()] == ["Local only"]


def test_watch_emits_on_local_writes_from_another_thread(open_db: OpenDb) -> None:
    db = open_db()
    books = BookRepository(db)
    with books.watch() as watch:
        assert watch.next(timeout=5) == []
        threading.Thread(target=lambda: books.add("Emma")).start()
        assert [b.title for b in watch.next(timeout=5)] == ["Emma"]
        with pytest.raises(TimeoutError):
            watch.next(timeout=0.2)  # nothing changed: nothing emitted


def test_watch_emits_when_sync_applies_a_checkpoint(open_db: OpenDb) -> None:
    """Replays the recorded service lines through the core, as the sync loop does."""
    db = open_db()
    core = db._core
    books = BookRepository(db)
    with books.watch() as watch:
        assert watch.next(timeout=5) == []
        core.control("start", '{"parameters":{}}')
        core.control("connection", "established")
        for line in capture_lines("ndjson-initial-with-headers.txt"):
            core.control("line_text", line)
        assert sorted(b.title for b in watch.next(timeout=5)) == ["Dune", "Emma"]
        core.control("stop")
    assert db.upload_queue_size() == 0


def test_watch_ignores_other_tables(open_db: OpenDb) -> None:
    db = open_db()
    with BookRepository(db).watch() as watch:
        watch.next(timeout=5)
        db.execute(
            "INSERT INTO upload_rejections (id, code) VALUES ('r1', 'x')"
        )  # a different table
        with pytest.raises(TimeoutError):
            watch.next(timeout=0.3)


# -- the SDK-shaped API: get/get_optional/get_all, batches, transactions, watch(sql) -----------


def test_get_raises_without_a_row_and_get_optional_returns_none(open_db: OpenDb) -> None:
    db = open_db()
    db.execute("INSERT INTO books (id, title) VALUES (?, 'Dune')", (B1,))
    assert db.get("SELECT title FROM books WHERE id = ?", (B1,)) == {"title": "Dune"}
    with pytest.raises(NotFoundError):
        db.get("SELECT title FROM books WHERE id = ?", ("nope",))
    assert db.get_optional("SELECT title FROM books WHERE id = ?", ("nope",)) is None
    assert db.get_all("SELECT id FROM books WHERE id = :id", {"id": B1}) == [{"id": B1}]


def test_execute_batch_runs_in_one_transaction_that_uploads_as_one(open_db: OpenDb) -> None:
    db = open_db()
    db.execute_batch("INSERT INTO books (id, title) VALUES (?, ?)", [(A, "A"), (B, "B"), (C, "C")])
    tx = db.get_next_crud_transaction()
    assert tx is not None and [e.id for e in tx.crud] == [A, B, C]
    with pytest.raises(apsw.ConstraintError):  # the third row collides: nothing is kept
        db.execute_batch(
            "INSERT INTO ps_data__books (id, data) VALUES (?, '{}')", [("x",), ("y",), (A,)]
        )
    assert db.get_all("SELECT id FROM books WHERE id IN ('x', 'y')") == []


def test_read_transaction_sees_one_snapshot_and_refuses_writes(open_db: OpenDb) -> None:
    db, other = open_db("shared.db"), open_db("shared.db")  # two connections, one file
    db.execute("INSERT INTO books (id, title) VALUES (?, 'A')", (A,))
    with db.read_transaction() as tx:
        assert tx.get("SELECT count(*) AS n FROM books")["n"] == 1
        other.execute("INSERT INTO books (id, title) VALUES (?, 'B')", (B,))
        assert tx.get("SELECT count(*) AS n FROM books")["n"] == 1  # still the snapshot
        with pytest.raises(PapyrusClientError, match="read_transaction"):
            tx.execute("INSERT INTO books (id, title) VALUES (?, 'C')", (C,))
        with pytest.raises(apsw.ReadOnlyError):
            tx.get_all("INSERT INTO books (id, title) VALUES (?, 'C') RETURNING id", (C,))
    assert db.get("SELECT count(*) AS n FROM books")["n"] == 2
    db.execute("INSERT INTO books (id, title) VALUES (?, 'D')", (D,))  # writable again


def test_upload_queue_stats_count_and_size(open_db: OpenDb) -> None:
    db = open_db()
    assert db.get_upload_queue_stats() == UploadQueueStats(0, None)
    db.execute("INSERT INTO books (id, title) VALUES (?, 'Dune')", (A,))
    db.execute("UPDATE books SET rating = 5 WHERE id = ?", (A,))
    stats = db.get_upload_queue_stats(include_size=True)
    sizes = db._core._conn.execute("SELECT length(data) FROM ps_crud").fetchall()
    assert stats == UploadQueueStats(2, sum(s for (s,) in sizes)) and stats.size > 40
    assert db.get_upload_queue_stats().count == 2


def test_watch_sql_finds_the_tables_of_a_join_itself(open_db: OpenDb) -> None:
    db = open_db()
    sql = (
        "SELECT b.title, r.code FROM books b JOIN upload_rejections r ON r.row_id = b.id"
        " WHERE b.rating IS NULL OR b.rating >= ? ORDER BY b.title"
    )
    assert db.resolve_tables(sql, (1,)) == {"books", "upload_rejections"}
    with db.watch(sql, (1,)) as watch:
        assert watch.next(timeout=5) == []
        db.execute("INSERT INTO books (id, title) VALUES (?, 'Dune')", (B1,))
        assert watch.next(timeout=5) == []  # books changed: re-run, still no rejection
        db.execute("INSERT INTO upload_rejections (id, row_id, code) VALUES ('r1', ?, 'x')", (B1,))
        assert watch.next(timeout=5) == [{"title": "Dune", "code": "x"}]
        db.execute("CREATE TABLE IF NOT EXISTS unrelated (x)")
        db.execute("INSERT INTO unrelated VALUES (1)")
        with pytest.raises(TimeoutError):
            watch.next(timeout=0.3)  # a table the query does not read


def test_watch_sql_with_an_unknown_table_fails_at_once(open_db: OpenDb) -> None:
    db = open_db()
    with pytest.raises(apsw.SQLError, match="no such table: boks"):
        db.watch("SELECT * FROM boks")
    with pytest.raises(apsw.SQLError, match="no such column: titel"):
        db.watch("SELECT titel FROM books")
    with pytest.raises(apsw.BindingsError):
        db.watch("SELECT * FROM books WHERE id = ?")  # the parameter is missing
    with pytest.raises(ValueError, match="one SQL statement"):
        db.watch("SELECT * FROM books; DELETE FROM books")
    assert db.get_all("SELECT count(*) AS n FROM books") == [{"n": 0}]


def test_watch_async_yields_on_changes(open_db: OpenDb) -> None:
    db = open_db()

    async def main() -> list[list[str]]:
        seen: list[list[str]] = []
        async with db.watch_async("SELECT title FROM books ORDER BY title") as watch:
            async for rows in watch:
                seen.append([r["title"] for r in rows])
                if len(seen) == 3:
                    break
                title, book_id = ("Dune", A) if len(seen) == 1 else ("Emma", B)
                threading.Thread(
                    target=db.execute,
                    args=("INSERT INTO books (id, title) VALUES (?, ?)",),
                    kwargs={"params": (book_id, title)},
                ).start()
        return seen

    assert asyncio.run(asyncio.wait_for(main(), 10)) == [[], ["Dune"], ["Dune", "Emma"]]


def test_status_changes_as_an_async_iterator(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    service, url = mock_sync
    service.put(USER, "books", "b1", {"title": "Dune"})
    db = open_db()

    async def main() -> list[SyncStatus]:
        seen = []
        stream = db.status_changes()
        async for status in stream:
            seen.append(status)
            if len(seen) == 1:
                db.connect(MockConnector(service, USER, url), FAST)
            if status.has_synced:
                break
        await stream.aclose()
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 15))
    assert not seen[0].has_synced and not seen[0].connected
    assert seen[-1].has_synced and seen[-1].last_synced_at is not None
    assert any(s.connected for s in seen)
    assert db.get("SELECT title FROM books") == {"title": "Dune"}


def test_auth_provider_takes_the_app_schema(tmp_path: Path) -> None:
    drafts = Table("drafts", [Column.text("body")])
    config = PapyrusApiConfig(data_dir=tmp_path / "client", token_store="file")
    schema = Schema([*ACCOUNT_SCHEMA.tables, drafts])
    guest = Schema([*GUEST_SCHEMA.tables, Table("drafts", [Column.text("body")], local_only=True)])
    with AuthProvider(config, schema=schema, guest_schema=guest, auto_connect=False) as app:
        account = app.powersync.database
        account.execute("INSERT INTO drafts (id, body) VALUES ('n1', 'hello')")
        tx = account.get_next_crud_transaction()
        assert tx is not None and [(e.table, e.op_data) for e in tx.crud] == [
            ("drafts", {"body": "hello"})
        ]
        app.guest_database.execute("INSERT INTO drafts (id, body) VALUES ('n1', 'local')")
        assert app.guest_database.upload_queue_size() == 0
    with pytest.raises(ValueError, match="upload_rejections"):
        AuthProvider(config, schema=Schema([drafts, *GUEST_SCHEMA.tables]))
    with AuthProvider(config) as app:  # the default is still the account schema
        assert app.powersync.database.schema is ACCOUNT_SCHEMA
