"""`AuthProvider.sync_now()`: returns once the server confirmed the last upload, and says which
service is down instead of waiting out its timeout. Against the whole stack.

Every call gets a generous timeout; that it was not needed is asserted from the result
(`timed_out`), never by measuring time.
"""

from __future__ import annotations

from typing import Any

from papyrus.client import AuthProvider, AuthState, SyncStatus
from tests.client.stack import STACK_SYNC, Stack

PASSWORD = "correct horse battery"
GENEROUS = 120.0


def signed_in(stack: Stack, name: str = "device", **kwargs: Any) -> AuthProvider:
    device = stack.client(name, auto_connect=False, **kwargs)
    device.register("ada@example.com", PASSWORD, "Ada")
    return device


def test_sync_now_returns_after_a_rejected_upload_and_lists_it(stack: Stack) -> None:
    device = signed_in(stack, validate_writes=False)  # the server is the judge here
    book = device.library.add("Dune", rating=4)
    first = device.sync_now(GENEROUS)
    assert first.synced and not first.timed_out and first.rejections == ()
    assert stack.sql("SELECT title, rating FROM books") == [("Dune", 4)]

    device.library.update(book.id, rating=99)  # the server allows 1..5
    result = device.sync_now(GENEROUS)
    assert result.synced and not result.timed_out and result.error is None
    [rejection] = result.rejections
    assert rejection.row_id == book.id and rejection.op == "PATCH" and rejection.code
    assert device.library.get(book.id).rating == 4  # type: ignore[union-attr]
    assert device.pending_changes() == 0

    again = device.sync_now(GENEROUS)  # nothing new: done at once, nothing listed again
    assert again.synced and again.rejections == ()


def test_sync_now_downloads_what_other_devices_wrote(stack: Stack) -> None:
    device = signed_in(stack)
    phone = stack.client("phone", auto_connect=False)
    phone.sign_in("ada@example.com", PASSWORD)
    phone.library.add("From the phone")
    assert phone.sync_now(GENEROUS).synced
    assert device.sync_now(GENEROUS).synced
    assert [b.title for b in device.library.list()] == ["From the phone"]


def test_sync_now_while_connected_waits_for_the_confirmation(stack: Stack) -> None:
    # Connects after sign-in and stays connected; the server is the judge of values here.
    device = stack.client("device", validate_writes=False)
    device.register("ada@example.com", PASSWORD, "Ada")
    books = [device.library.add(f"Book {n}", rating=3) for n in range(20)]
    result = device.sync_now(GENEROUS)
    assert result.synced, result
    assert device.database.connected  # it was connected before, and stays so
    assert stack.sql("SELECT count(*) FROM books") == [(20,)]
    device.library.update(books[0].id, rating=99)
    result = device.sync_now(GENEROUS)
    assert result.synced and len(result.rejections) == 1
    # The checkpoint covering the refused upload has been applied: the server's value is back.
    assert device.library.get(books[0].id).rating == 3  # type: ignore[union-attr]


def test_sync_now_names_the_sync_service_when_it_is_down(stack: Stack) -> None:
    device = signed_in(stack)
    device.library.add("Waits")
    stack.stop_sync()
    result = device.sync_now(GENEROUS)
    assert not result.synced and not result.timed_out
    assert result.unreachable == "sync_service"
    assert result.error is not None and "sync service" in result.error
    assert device.pending_changes() == 1


def test_sync_now_names_the_sync_service_when_it_stops_while_waiting(stack: Stack) -> None:
    device = signed_in(stack)
    device.library.add("Waits")
    seen: list[SyncStatus] = []

    def stop_on_first_status(status: SyncStatus) -> None:
        if not seen:  # runs in the sync thread as it starts connecting
            stack.stop_sync()
        seen.append(status)

    result = device.sync_now(GENEROUS, on_status=stop_on_first_status)
    assert seen
    assert not result.synced and not result.timed_out
    assert result.unreachable == "sync_service", result
    assert not device.database.connected  # sync_now connected, so it disconnected


def test_sync_now_names_the_api_when_it_is_down(stack: Stack) -> None:
    signed_in(stack).close()
    device = AuthProvider(
        stack.config("device", api_url="http://127.0.0.1:9"),
        sync_options=STACK_SYNC,
        auto_connect=False,
    )
    stack.providers.append(device)
    assert device.bootstrap() is AuthState.SIGNED_IN  # the session is kept while the API is away
    result = device.sync_now(GENEROUS)
    assert not result.synced and not result.timed_out
    assert result.unreachable == "api"
    assert result.error is not None and "Papyrus API" in result.error


def test_sync_now_stops_when_the_session_is_revoked(stack: Stack) -> None:
    device = signed_in(stack)
    device.library.add("Kept for later")
    other = stack.client("other", auto_connect=False)
    other.sign_in("ada@example.com", PASSWORD)
    other.sign_out(all_devices=True)
    result = device.sync_now(GENEROUS)
    assert not result.synced and not result.timed_out and result.unreachable is None
    assert result.error is not None and "session has ended" in result.error
    assert device.state is AuthState.SIGNED_OUT and device.pending_changes() == 1
