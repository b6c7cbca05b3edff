"""The local database: the upload queue, transactions, change notifications, watch()."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from papyrus.client import GUEST_SCHEMA, BookRepository, PowerSyncDatabase
from tests.client.mock_sync import capture_lines

OpenDb = Callable[..., PowerSyncDatabase]


def test_insert_queues_a_put_shaped_like_the_node_sdk(open_db: OpenDb) -> None:
    db = open_db()
    db.execute(
        "INSERT INTO books (id, title, page_count, is_favorite, subtitle) VALUES (?, ?, ?, ?, ?)",
        ("b1", "Dune", 412, 1, None),
    )
    tx = db.get_next_crud_transaction()
    assert tx is not None
    assert [e.to_json() for e in tx.crud] == [
        {
            "op_id": 1,
            "op": "PUT",
            "type": "books",
            "id": "b1",
            "tx_id": 1,
            "data": {"title": "Dune", "page_count": 412, "is_favorite": 1},
        }
    ]


def test_update_and_delete_queue_patch_and_delete(open_db: OpenDb) -> None:
    db = open_db()
    db.execute("INSERT INTO books (id, title) VALUES ('b1', 'Dune')")
    db.execute("UPDATE books SET title = 'Dune Messiah', rating = NULL WHERE id = 'b1'")
    db.execute("DELETE FROM books WHERE id = 'b1'")
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
        db.execute("INSERT INTO books (id, title) VALUES ('a', 'A')")
        db.execute("INSERT INTO books (id, title) VALUES ('b', 'B')")
    db.execute("INSERT INTO books (id, title) VALUES ('c', 'C')")
    first = db.get_next_crud_transaction()
    assert first is not None and [e.id for e in first.crud] == ["a", "b"]
    assert first.transaction_id == first.crud[1].transaction_id
    first.complete()
    second = db.get_next_crud_transaction()
    assert second is not None and [e.id for e in second.crud] == ["c"]


def test_batch_reports_have_more(open_db: OpenDb) -> None:
    db = open_db()
    for i in range(3):
        db.execute("INSERT INTO books (id, title) VALUES (?, 't')", (f"b{i}",))
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
