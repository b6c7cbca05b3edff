"""Changes that have not reached the server survive every way a session can end or change.

Against the whole stack (the real API and the development sync service). Clients that must keep
a queue are made with `auto_connect=False`, so their writes stay queued until the test syncs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from papyrus.client import (
    ApiError,
    AuthProvider,
    AuthState,
    PendingChangesError,
    TransientError,
)
from tests.client.conftest import eventually
from tests.client.stack import STACK_SYNC, Stack

PASSWORD = "correct horse battery"
DEAD_URL = "http://127.0.0.1:9"  # nothing listens there


def titles(provider: AuthProvider) -> list[str]:
    return sorted(b.title or "" for b in provider.library.list())


def server_titles(stack: Stack) -> list[str]:
    return sorted(r[0] for r in stack.sql("SELECT title FROM books"))


def active_sessions(stack: Stack, email: str) -> int:
    return stack.sql(
        "SELECT count(*) FROM auth_sessions s JOIN users u ON u.id = s.user_id"
        " WHERE u.email = %s AND s.revoked_at IS NULL",
        (email,),
    )[0][0]


def queued_device(
    stack: Stack, name: str = "device", email: str = "ada@example.com"
) -> AuthProvider:
    """A new account signed in on a device whose two new books wait to upload."""
    device = stack.client(name, auto_connect=False)
    device.register(email, PASSWORD, "Ada")
    device.library.add("Queued one")
    device.library.add("Queued two")
    assert device.pending_changes() == 2
    return device


def assert_untouched(device: AuthProvider, refresh_token: str | None) -> None:
    assert device.state is AuthState.SIGNED_IN
    assert device.user is not None and device.user.email == "ada@example.com"
    assert device.auth.tokens.load_refresh_token() == refresh_token
    assert device.pending_changes() == 2
    assert titles(device) == ["Queued one", "Queued two"]


def test_logout_offline_and_switch_refuse_while_changes_wait(stack: Stack) -> None:
    stack.client("phone").register("bob@example.com", PASSWORD, "Bob")
    device = queued_device(stack)
    token = device.auth.tokens.load_refresh_token()

    with pytest.raises(PendingChangesError) as refused:
        device.sign_out()
    assert refused.value.count == 2 and refused.value.owner_email == "ada@example.com"
    assert_untouched(device, token)

    with pytest.raises(PendingChangesError) as refused:
        device.set_offline_mode(True)
    assert refused.value.count == 2
    assert_untouched(device, token)
    assert not device.offline_mode

    with pytest.raises(PendingChangesError):
        device.sign_in("bob@example.com", PASSWORD)
    assert_untouched(device, token)
    assert device.auth.me().email == "ada@example.com"  # the session still works
    assert active_sessions(stack, "bob@example.com") == 1  # the refused sign-in's was ended

    with pytest.raises(PendingChangesError):
        device.register("carol@example.com", PASSWORD, "Carol")
    assert_untouched(device, token)
    assert stack.sql("SELECT count(*) FROM users WHERE email = 'carol@example.com'") == [(0,)]

    device.sign_in("ada@example.com", PASSWORD)  # the same account: its changes are kept
    assert device.pending_changes() == 2 and titles(device) == ["Queued one", "Queued two"]
    assert active_sessions(stack, "ada@example.com") == 1  # the replaced session was ended

    result = device.sync_now(timeout=120)
    assert result.synced, result
    assert server_titles(stack) == ["Queued one", "Queued two"]
    assert device.sign_out().server_session_ended  # nothing waits now: no refusal
    assert device.state is AuthState.SIGNED_OUT


def test_discarding_pending_changes_is_explicit(stack: Stack) -> None:
    device = queued_device(stack)
    device.set_offline_mode(True, discard_pending=True)
    assert device.state is AuthState.OFFLINE
    assert device.pending_changes() == 0
    assert device.powersync.database.get_all("SELECT id FROM books") == []
    device.set_offline_mode(False)

    again = queued_device(stack, "laptop", "dora@example.com")
    assert again.sign_out(discard_pending=True).server_session_ended
    assert again.pending_changes() == 0 and again.auth.tokens.load_refresh_token() is None
    assert server_titles(stack) == []


def test_a_revoked_session_keeps_the_queue_for_the_same_user(stack: Stack) -> None:
    device, other = stack.client("device"), stack.client("other")
    device.register("ada@example.com", PASSWORD, "Ada")
    device.library.add("Before revocation")
    eventually(lambda: device.database.status.upload_queue_size == 0)
    other.sign_in("ada@example.com", PASSWORD)
    other.sign_out(all_devices=True)
    device.library.add("After revocation")  # its upload meets a 401, and the refresh fails
    assert device.wait_signed_out(20)
    assert device.state is AuthState.SIGNED_OUT
    assert device.auth.tokens.load_refresh_token() is None
    assert device.pending_changes() == 1
    kept = device.powersync.database.get_all("SELECT title FROM books ORDER BY title")
    assert [r["title"] for r in kept] == ["After revocation", "Before revocation"]
    assert server_titles(stack) == ["Before revocation"]

    device.sign_in("ada@example.com", PASSWORD)
    eventually(lambda: server_titles(stack) == ["After revocation", "Before revocation"])
    assert device.sync_now(timeout=120).synced
    assert device.pending_changes() == 0


def test_a_session_revoked_from_another_device_then_another_user(stack: Stack) -> None:
    stack.client("phone").register("bob@example.com", PASSWORD, "Bob")
    device = stack.client("device", auto_connect=False)
    device.register("ada@example.com", PASSWORD, "Ada")
    device.library.add("Ada's unsent book")
    other = stack.client("other")
    other.sign_in("ada@example.com", PASSWORD)
    sessions = other.auth.authorized(other.api.sessions)
    [target] = [s["id"] for s in sessions if s["device_label"] == "device"]
    other.auth.authorized(lambda access: other.api.revoke_session(access, target))
    device.close()

    restarted = stack.client("device", auto_connect=False)
    assert restarted.bootstrap() is AuthState.SIGNED_OUT  # the refresh is refused
    assert restarted.pending_changes() == 1 and restarted.powersync.has_data()

    with pytest.raises(PendingChangesError) as refused:
        restarted.sign_in("bob@example.com", PASSWORD)
    assert refused.value.count == 1 and refused.value.owner_email == "ada@example.com"
    assert restarted.state is AuthState.SIGNED_OUT and restarted.pending_changes() == 1
    assert restarted.auth.tokens.load_refresh_token() is None
    assert active_sessions(stack, "bob@example.com") == 1  # only the phone's
    with pytest.raises(PendingChangesError):
        restarted.sign_out()
    assert restarted.pending_changes() == 1

    restarted.sign_in("bob@example.com", PASSWORD, discard_pending=True)
    assert restarted.user is not None and restarted.user.email == "bob@example.com"
    assert restarted.pending_changes() == 0
    assert restarted.powersync.database.get_all("SELECT id FROM books") == []
    assert restarted.sync_now(timeout=120).synced
    assert server_titles(stack) == []


def test_a_failed_sign_in_keeps_the_session_and_its_queue(stack: Stack) -> None:
    stack.client("phone").register("bob@example.com", PASSWORD, "Bob")
    device = queued_device(stack)
    token = device.auth.tokens.load_refresh_token()
    with pytest.raises(ApiError) as wrong:
        device.sign_in("ada@example.com", "not the password")
    assert wrong.value.code == "invalid_credentials"
    assert_untouched(device, token)
    assert device.auth.me().email == "ada@example.com"
    device.close()

    unreachable = AuthProvider(
        stack.config("device", api_url=DEAD_URL), sync_options=STACK_SYNC, auto_connect=False
    )
    stack.providers.append(unreachable)
    assert unreachable.bootstrap() is AuthState.SIGNED_IN  # kept while the API is away
    with pytest.raises(TransientError):
        unreachable.sign_in("bob@example.com", PASSWORD)
    assert_untouched(unreachable, token)
    unreachable.close()

    back = stack.client("device", auto_connect=False)
    assert back.bootstrap() is AuthState.SIGNED_IN
    assert back.sync_now(timeout=120).synced
    assert server_titles(stack) == ["Queued one", "Queued two"]


def test_logout_leaves_no_readable_rows_in_the_files(stack: Stack) -> None:
    device = stack.client("device", auto_connect=False)
    device.register("ada@example.com", PASSWORD, "Ada")
    marker = "Zanzibar-Marmalade-7741"
    book = device.library.add(marker, author="Quillon Vexworth")
    device.library.update(book.id, current_page=12)
    assert device.sync_now(timeout=120).synced
    path = Path(device.powersync.database.path)
    files = [path, path.with_name(path.name + "-wal")]
    assert any(marker.encode() in f.read_bytes() for f in files if f.exists())  # the probe works

    device.sign_out()
    for f in [*files, path.with_name(path.name + "-shm")]:
        if f.exists():
            raw = f.read_bytes()
            for secret in (marker, "Quillon Vexworth", "ada@example.com"):
                assert secret.encode() not in raw, f"{secret!r} still in {f.name}"
    device.register("bob@example.com", PASSWORD, "Bob")  # the database still works
    assert titles(device) == []


def test_logout_with_the_api_unreachable_says_the_session_lives_on(stack: Stack) -> None:
    device = stack.client("device", auto_connect=False)
    device.register("ada@example.com", PASSWORD, "Ada")
    device.close()
    unreachable = AuthProvider(stack.config("device", api_url=DEAD_URL), auto_connect=False)
    stack.providers.append(unreachable)
    assert unreachable.bootstrap() is AuthState.SIGNED_IN
    result = unreachable.sign_out()
    assert not result.server_session_ended
    assert result.server_error is not None and "cannot reach the Papyrus API" in result.server_error
    assert unreachable.state is AuthState.SIGNED_OUT
    assert unreachable.auth.tokens.load_refresh_token() is None
    assert active_sessions(stack, "ada@example.com") == 1
