"""The sync loop over real HTTP against a protocol mock (and the recorded service lines)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace

from papyrus.client import BookRepository, PowerSyncDatabase
from tests.client.conftest import FAST, eventually
from tests.client.mock_sync import MockConnector, MockSyncService, capture_lines

OpenDb = Callable[..., PowerSyncDatabase]
USER = "11111111-1111-4111-8111-111111111111"


def titles(db: PowerSyncDatabase) -> list[str]:
    return [b.title or "" for b in BookRepository(db).list()]


def test_recorded_stream_syncs_and_reconnects_after_the_stream_ends(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    service, url = mock_sync
    service.replay = capture_lines("ndjson-initial-with-headers.txt")
    db = open_db()
    connector = MockConnector(service, USER, url)
    db.connect(connector, FAST)
    assert db.wait_for_first_sync(10)
    assert sorted(titles(db)) == ["Dune", "Emma"]
    status = db.status
    assert status.last_synced_at is not None and status.download_error is None
    first = service.requests[0]
    assert first["buckets"] == [] and first["raw_data"] is True
    assert first["client_id"] == db._core.client_id()
    # The replayed body ends, so the loop reconnects and reports what it already holds.
    eventually(lambda: len(service.requests) >= 2)
    assert service.requests[1]["buckets"] == [{"name": service.bucket(USER), "after": "3"}]
    db.disconnect()
    assert not db.status.connected


def test_two_clients_of_one_user_converge(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    service, url = mock_sync
    a, b = open_db("a.db"), open_db("b.db")
    a.connect(MockConnector(service, USER, url), FAST)
    b.connect(MockConnector(service, USER, url), FAST)
    books_a, books_b = BookRepository(a, USER), BookRepository(b, USER)
    dune = books_a.add("Dune", author="Frank Herbert", page_count=412)
    eventually(lambda: titles(b) == ["Dune"])
    assert books_b.get(dune.id).page_count == 412  # type: ignore[union-attr]
    books_b.update(dune.id, title="Dune (2nd ed.)", is_favorite=True)
    eventually(lambda: titles(a) == ["Dune (2nd ed.)"])
    assert books_a.get(dune.id).is_favorite  # type: ignore[union-attr]
    books_a.delete(dune.id)
    eventually(lambda: titles(b) == [] and titles(a) == [])
    eventually(lambda: a.status.upload_queue_size == 0 and b.status.upload_queue_size == 0)


def test_failed_uploads_are_retried_and_reported(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    service, url = mock_sync
    a, b = open_db("a.db"), open_db("b.db")
    connector = MockConnector(service, USER, url)
    connector.fail_uploads = 2
    errors: list[str] = []
    a.on_status_change(lambda s: errors.append(s.upload_error) if s.upload_error else None)
    a.connect(connector, FAST)
    b.connect(MockConnector(service, USER, url), FAST)
    BookRepository(a, USER).add("Persuasion")
    eventually(lambda: titles(b) == ["Persuasion"])
    assert errors and "backend unavailable" in errors[0]
    assert len(connector.uploads) == 1  # the failed attempts completed nothing
    eventually(lambda: a.status.upload_error is None and a.status.upload_queue_size == 0)


def test_download_waits_for_the_write_checkpoint_of_our_upload(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    """The server rewrites the uploaded title; the client must end up with the server's value
    and never apply a checkpoint older than its own upload."""
    service, url = mock_sync
    db = open_db()

    class Rewriting(MockConnector):
        def upload_data(self, database: PowerSyncDatabase) -> None:
            tx = database.get_next_crud_transaction()
            assert tx is not None
            for e in tx.crud:
                self.service.put(self.user, e.table, e.id, {"title": "Server title"})
            tx.complete()

    db.connect(Rewriting(service, USER, url), FAST)
    assert db.wait_for_first_sync(10)
    book = BookRepository(db, USER).add("Local title")
    eventually(lambda: titles(db) == ["Server title"])
    assert service.write_checkpoints  # the gate was opened by a write checkpoint
    assert BookRepository(db).get(book.id) is not None


def test_writes_made_while_the_service_is_down_upload_on_reconnect(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    service, url = mock_sync
    a, b = open_db("a.db"), open_db("b.db")
    b.connect(MockConnector(service, USER, url), FAST)
    service.down = True
    a.connect(MockConnector(service, USER, url), FAST)
    BookRepository(a, USER).add("Offline write")
    eventually(lambda: a.status.download_error is not None)
    assert "503" in (a.status.download_error or "")
    service.down = False
    service.end_streams()  # b reconnects too
    eventually(lambda: titles(b) == ["Offline write"])
    eventually(lambda: a.status.download_error is None and a.status.connected)


def test_401_drops_the_token_and_asks_the_connector_again(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    service, url = mock_sync
    db = open_db()
    connector = MockConnector(service, USER, url)
    db.connect(connector, FAST)
    assert db.wait_for_first_sync(10)
    assert connector.fetches == 1
    service.tokens.clear()  # every issued token is now refused
    service.end_streams()
    eventually(lambda: connector.fetches >= 2 and db.status.connected)
    service.put(USER, "books", "x1", {"title": "After 401"})
    eventually(lambda: titles(db) == ["After 401"])


def test_expiring_token_is_prefetched_and_the_stream_restarts_at_once(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    service, url = mock_sync
    db = open_db()
    connector = MockConnector(service, USER, url)
    db.connect(connector, replace(FAST, retry_delay=60))  # a visible disconnect would stall
    assert db.wait_for_first_sync(10)
    started = time.monotonic()
    service.push_line({"token_expires_in": 10})
    eventually(lambda: len(service.requests) >= 2, timeout=10)
    assert time.monotonic() - started < 10
    assert connector.fetches == 2


def test_no_credentials_is_reported_and_retried(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    service, url = mock_sync
    db = open_db()
    connector = MockConnector(service, USER, url)
    connector.signed_in = False
    db.connect(connector, FAST)
    eventually(lambda: db.status.download_error is not None)
    assert "not signed in" in (db.status.download_error or "")
    connector.signed_in = True
    assert db.wait_for_first_sync(10)


def test_progress_is_reported_during_a_larger_initial_sync(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    service, url = mock_sync
    for i in range(3000):
        service.put(USER, "books", f"b{i:05}", {"title": f"Book {i}", "page_count": i})
    db = open_db()
    seen: list[tuple[int, int]] = []
    db.on_status_change(
        lambda s: (
            seen.append((s.download_progress.downloaded, s.download_progress.total))
            if s.download_progress
            else None
        )
    )
    db.connect(MockConnector(service, USER, url), FAST)
    assert db.wait_for_first_sync(30)
    assert BookRepository(db).count() == 3000
    assert any(0 < done < total == 3000 for done, total in seen)


def test_disconnect_closes_the_stream(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    service, url = mock_sync
    db = open_db()
    db.connect(MockConnector(service, USER, url), FAST)
    assert db.wait_for_first_sync(10)
    eventually(lambda: service.open_streams == 1)
    db.disconnect()
    eventually(lambda: service.open_streams == 0)
    assert not db.status.connected and not db.status.connecting


def test_one_sync_loop_per_database_file_and_the_other_follows(
    mock_sync: tuple[MockSyncService, str], open_db: OpenDb
) -> None:
    """Two connections to one file (as two processes would have): only the first runs a sync
    loop; the second sees its status, its writes are uploaded by the first, and it takes over
    when the first disconnects."""
    service, url = mock_sync
    owner, other = open_db("shared.db"), open_db("shared.db")
    owner.connect(MockConnector(service, USER, url), FAST)
    assert owner.wait_for_first_sync(10)
    other.connect(MockConnector(service, USER, url), FAST)
    assert owner.owns_sync and not other.owns_sync
    assert other.sync_owner_pid == os.getpid()
    eventually(lambda: other.status.connected and other.status.has_synced)

    assert not other.local_writes_pending()
    notify = service._notify
    service._notify = lambda user: None  # type: ignore[method-assign]  # hold checkpoints back
    with BookRepository(owner, USER).watch() as watch:
        assert watch.next(timeout=5) == []
        BookRepository(other, USER).add("Written by the follower")
        assert other.local_writes_pending()
        assert [b.title for b in watch.next(timeout=5)] == ["Written by the follower"]
    # Uploaded by the owner and its write checkpoint requested, but no checkpoint came back:
    # seen from the follower's connection, the round trip is not over yet.
    eventually(lambda: [r["title"] for r in service.rows.values()] == ["Written by the follower"])
    target = "SELECT value FROM ps_kv WHERE key = 'target_checkpoint_request_id'"
    eventually(lambda: other.get_all(target) == [{"value": 1}])
    assert other.local_writes_pending()
    service._notify = notify  # type: ignore[method-assign]
    notify(USER)
    eventually(lambda: not other.local_writes_pending())
    eventually(lambda: other.status.upload_queue_size == 0)
    service.put(USER, "books", "s1", {"title": "From the server"})
    eventually(lambda: "From the server" in titles(other))
    assert len(service.requests) == 1 and service.open_streams == 1  # one loop, one stream
    assert owner.status.download_error is None and other.status.download_error is None

    owner.disconnect()
    eventually(lambda: other.owns_sync and other.sync_owner_pid is None)
    eventually(lambda: len(service.requests) == 2 and service.open_streams == 1)
    eventually(lambda: other.status.connected)
    service.put(USER, "books", "s2", {"title": "After the take-over"})
    eventually(lambda: "After the take-over" in titles(other))
