"""The official PowerSync Node SDK against `papyrus dev`'s stack: the development sync service
must be indistinguishable from the real one for a client nobody here wrote."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.node


def _book(title: str, **fields) -> dict:
    return {
        "op": "PUT",
        "type": "books",
        "id": str(uuid.uuid4()),
        "data": {"title": title, **fields},
    }


def _titles(client) -> list[str]:
    return [r["title"] for r in client.rows("SELECT title FROM books ORDER BY title")]


def test_initial_sync_brings_own_books_and_none_of_another_users(stack: Stack) -> None:
    ada = stack.register("ada@example.com")
    bob = stack.register("bob@example.com")
    stack.upload(ada, [_book("Dune", author="Herbert", page_count=412), _book("Emma")])
    stack.upload(bob, [_book("Bob's secret diary")])

    client = stack.node_client("ada", ada)
    client.call("connect")
    client.call("waitForFirstSync")
    assert _titles(client) == ["Dune", "Emma"]
    [dune] = client.rows("SELECT * FROM books WHERE title = 'Dune'")
    assert dune["author"] == "Herbert"
    assert dune["page_count"] == 412
    assert dune["owner_user_id"] == ada["user"]["id"]
    assert dune["is_favorite"] == 0
    assert dune["updated_at"]


def test_live_changes_reach_a_second_connected_client(stack: Stack) -> None:
    ada = stack.register("live@example.com")
    writer = stack.node_client("writer", ada)
    reader = stack.node_client("reader", stack.login("live@example.com"))
    for client in (writer, reader):
        client.call("connect")
        client.call("waitForFirstSync")

    book_id = str(uuid.uuid4())
    writer.execute(
        "INSERT INTO books (id, owner_user_id, title, is_favorite) VALUES (?, ?, ?, ?)",
        book_id,
        ada["user"]["id"],
        "Middlemarch",
        1,
    )
    reader.wait_until(lambda c: _titles(c) == ["Middlemarch"], what="insert")

    writer.execute(
        "UPDATE books SET title = ?, rating = ? WHERE id = ?", "Middlemarch (2nd)", 5, book_id
    )
    reader.wait_until(
        lambda c: (
            c.rows("SELECT title, rating FROM books")
            == [{"title": "Middlemarch (2nd)", "rating": 5}]
        ),
        what="update",
    )

    writer.execute("DELETE FROM books WHERE id = ?", book_id)
    reader.wait_until(lambda c: _titles(c) == [], what="delete")


def test_upload_completes_through_the_write_checkpoint(stack: Stack, sql) -> None:
    ada = stack.register("wc@example.com")
    client = stack.node_client("wc", ada)
    client.call("connect")
    client.call("waitForFirstSync")
    book_id = str(uuid.uuid4())
    client.execute(
        "INSERT INTO books (id, owner_user_id, title) VALUES (?, ?, ?)",
        book_id,
        ada["user"]["id"],
        "Persuasion",
    )
    # The queue drains, and the server's version of the row (with server-set timestamps) is
    # applied only once the write checkpoint covering the upload arrives.
    client.wait_until(
        lambda c: (
            c.call("status")["queue"] == 0
            and c.rows("SELECT updated_at FROM books WHERE id = ?", book_id)[0]["updated_at"]
        ),
        what="write checkpoint",
    )
    assert sql("SELECT title FROM books WHERE id = %s", (book_id,)) == [("Persuasion",)]
    status = client.call("status")
    assert status["counters"]["uploads"] == 1
    assert status["uploadError"] is None


def test_rejected_upload_is_rolled_back_locally(stack: Stack, sql) -> None:
    ada = stack.register("reject@example.com")
    stack.upload(ada, [_book("Kept")])
    client = stack.node_client("reject", ada)
    client.call("connect")
    client.call("waitForFirstSync")
    client.execute(
        "INSERT INTO books (id, owner_user_id, title, rating) VALUES (?, ?, ?, ?)",
        str(uuid.uuid4()),
        ada["user"]["id"],
        "Invalid rating",
        9,
    )
    client.wait_until(
        lambda c: c.call("status")["queue"] == 0 and _titles(c) == ["Kept"],
        what="rollback of the rejected insert",
    )
    assert client.call("status")["counters"]["rejected"] == 1
    assert sql("SELECT title FROM books") == [("Kept",)]
    assert sql("SELECT count(*) FROM sync_rejections") == [(1,)]


def test_sync_service_restart_with_connected_clients(stack: Stack) -> None:
    ada = stack.register("restart@example.com")
    first = stack.node_client("first", ada)
    second = stack.node_client("second", stack.login("restart@example.com"))
    for client in (first, second):
        client.call("connect")
        client.call("waitForFirstSync")
    stack.upload(ada, [_book("Before")])
    second.wait_until(lambda c: _titles(c) == ["Before"], what="first change")

    stack.stop_sync()
    # Commits while the service is down, and a local write that must wait for it.
    stack.upload(ada, [_book("While down")])
    first.execute(
        "INSERT INTO books (id, owner_user_id, title) VALUES (?, ?, ?)",
        str(uuid.uuid4()),
        ada["user"]["id"],
        "Offline write",
    )
    stack.start_sync()

    expected = ["Before", "Offline write", "While down"]
    for client in (first, second):
        client.wait_until(lambda c: _titles(c) == expected, timeout=30, what="convergence")
    assert first.call("status")["queue"] == 0


def test_token_expiry_and_refresh_mid_stream(tmp_path, database_url) -> None:
    """With 30-second PowerSync tokens, the SDK fetches new credentials before the old token
    dies, and sync keeps working past the first token's expiry."""
    import time

    from tests.e2e.conftest import running_stack

    with running_stack(tmp_path, database_url, POWERSYNC_TOKEN_TTL_SECONDS=30) as stack:
        ada = stack.register("expiry@example.com")
        client = stack.node_client("expiry", ada)
        started = time.monotonic()
        client.call("connect")
        client.call("waitForFirstSync")
        first_fetches = client.call("status")["counters"]["fetchCredentials"]
        client.wait_until(
            lambda c: c.call("status")["counters"]["fetchCredentials"] > first_fetches,
            timeout=40,
            what="a credentials refresh before expiry",
        )
        time.sleep(max(0.0, 32 - (time.monotonic() - started)))  # the first token is dead now
        stack.upload(ada, [_book("After expiry")])
        client.wait_until(lambda c: _titles(c) == ["After expiry"], what="sync after expiry")
        assert client.call("status")["connected"] is True
