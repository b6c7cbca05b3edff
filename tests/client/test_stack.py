"""The client against the whole stack: the real API and the development sync service."""

from __future__ import annotations

from papyrus.client import AuthProvider, AuthState
from tests.client.conftest import eventually
from tests.client.stack import Stack

PASSWORD = "correct horse battery"


def titles(provider: AuthProvider) -> list[str]:
    return [b.title or "" for b in provider.library.list()]


def test_two_clients_of_one_user_converge(stack: Stack) -> None:
    a, b = stack.client("a"), stack.client("b")
    a.register("ada@example.com", PASSWORD, "Ada")
    b.sign_in("ada@example.com", PASSWORD)
    dune = a.library.add("Dune", author="Frank Herbert", page_count=412, co_authors=["X"])
    eventually(lambda: titles(b) == ["Dune"])
    copy = b.library.get(dune.id)
    assert copy is not None and copy.page_count == 412 and copy.co_authors == ["X"]
    b.library.update(dune.id, title="Dune (2nd ed.)", is_favorite=True, rating=5)
    eventually(lambda: titles(a) == ["Dune (2nd ed.)"])
    assert a.library.get(dune.id).is_favorite  # type: ignore[union-attr]
    a.library.delete(dune.id)
    eventually(lambda: titles(a) == [] and titles(b) == [])
    assert stack.sql("SELECT count(*) FROM books")[0][0] == 0
    assert a.state is AuthState.SIGNED_IN


def account_rows(provider: AuthProvider) -> list[dict]:
    return provider.powersync.database.get_all("SELECT id, title FROM books")


def test_writes_made_while_the_sync_service_is_down_arrive_after_it_returns(
    stack: Stack,
) -> None:
    a, b = stack.client("a"), stack.client("b")
    a.register("ada@example.com", PASSWORD, "Ada")
    b.sign_in("ada@example.com", PASSWORD)
    assert a.database.wait_for_first_sync(20) and b.database.wait_for_first_sync(20)
    stack.stop_sync()
    a.library.add("Written while sync was down")
    eventually(lambda: a.database.status.last_error is not None)
    assert titles(b) == []
    stack.start_sync()
    eventually(lambda: titles(b) == ["Written while sync was down"], timeout=30)
    eventually(lambda: a.database.status.upload_queue_size == 0)
    eventually(lambda: a.database.status.connected and a.database.status.last_error is None)


def test_logout_and_account_switch_clear_the_account_database(stack: Stack) -> None:
    device = stack.client("device")
    device.register("ada@example.com", PASSWORD, "Ada")
    device.library.add("Ada's book")
    eventually(lambda: device.pending_changes() == 0)  # logout refuses while changes wait
    assert stack.sql("SELECT title FROM books") == [("Ada's book",)]
    device.sign_out()
    assert device.state is AuthState.SIGNED_OUT
    assert account_rows(device) == [] and device.powersync.database.upload_queue_size() == 0
    assert titles(device) == []  # the guest library is live now, and it is empty

    device.register("bob@example.com", PASSWORD, "Bob")
    assert device.database.wait_for_first_sync(20)
    assert titles(device) == []  # nothing of Ada's
    device.library.add("Bob's book")
    eventually(lambda: device.pending_changes() == 0)
    assert len(stack.sql("SELECT 1 FROM books")) == 2

    device.sign_in("ada@example.com", PASSWORD)  # a different account: Bob's data goes
    eventually(lambda: titles(device) == ["Ada's book"], timeout=20)
    assert [r["title"] for r in account_rows(device)] == ["Ada's book"]
    assert device.user is not None and device.user.email == "ada@example.com"


def test_the_guest_library_survives_restarts_and_never_reaches_the_server(
    stack: Stack,
) -> None:
    first = stack.client("device")
    assert first.bootstrap() is AuthState.SIGNED_OUT
    first.library.add("Guest book")
    first.close()

    again = stack.client("device")
    assert again.bootstrap() is AuthState.SIGNED_OUT
    assert titles(again) == ["Guest book"]
    again.register("ada@example.com", PASSWORD, "Ada")
    assert again.database.wait_for_first_sync(20)
    again.library.add("Account book")
    eventually(lambda: again.pending_changes() == 0)
    assert stack.sql("SELECT title FROM books") == [("Account book",)]
    assert titles(again) == ["Account book"]  # guest records are not merged in
    again.sign_out()
    assert titles(again) == ["Guest book"]
    assert stack.sql("SELECT count(*) FROM books WHERE title = 'Guest book'") == [(0,)]


def test_offline_mode_drops_the_session_and_keeps_working(stack: Stack) -> None:
    device = stack.client("device")
    device.register("ada@example.com", PASSWORD, "Ada")
    device.library.add("Synced book")
    eventually(lambda: device.pending_changes() == 0)  # offline mode refuses while it waits
    assert stack.sql("SELECT count(*) FROM books") == [(1,)]
    device.set_offline_mode(True)
    assert device.state is AuthState.OFFLINE
    assert device.auth.tokens.load_refresh_token() is None
    assert account_rows(device) == []
    device.library.add("Offline book")
    device.close()

    restarted = stack.client("device")
    assert restarted.bootstrap() is AuthState.OFFLINE
    assert titles(restarted) == ["Offline book"]
    assert stack.sql("SELECT title FROM books") == [("Synced book",)]
    restarted.set_offline_mode(False)
    assert restarted.state is AuthState.SIGNED_OUT


def test_a_restart_restores_the_session_and_syncs(stack: Stack) -> None:
    first = stack.client("device")
    first.register("ada@example.com", PASSWORD, "Ada")
    first.library.add("Kept")
    eventually(lambda: first.database.status.upload_queue_size == 0)
    first.close()
    again = stack.client("device")
    assert again.bootstrap() is AuthState.SIGNED_IN
    assert again.user is not None and again.user.email == "ada@example.com"
    assert titles(again) == ["Kept"]
    assert again.database.wait_for_first_sync(20)


def test_a_rejected_upload_is_kept_locally_and_the_row_returns_to_the_server_state(
    stack: Stack,
) -> None:
    device = stack.client("device", validate_writes=False)  # the server is the judge here
    device.register("ada@example.com", PASSWORD, "Ada")
    book = device.library.add("Dune", rating=4)
    eventually(lambda: stack.sql("SELECT rating FROM books") == [(4,)])
    device.library.update(book.id, rating=99)  # the server allows 1..5
    eventually(lambda: len(device.data_store.rejections()) == 1)
    rejection = device.data_store.rejections()[0]
    assert rejection.row_id == book.id and rejection.op == "PATCH" and rejection.code
    eventually(lambda: device.library.get(book.id).rating == 4)  # type: ignore[union-attr]
    bad = device.library.add("Never stored", rating=0)
    eventually(lambda: device.library.get(bad.id) is None)
    assert len(device.data_store.rejections()) == 2
    assert stack.sql("SELECT title, rating FROM books") == [("Dune", 4)]
    server_side = device.auth.server_rejections()
    assert len(server_side) == 2
