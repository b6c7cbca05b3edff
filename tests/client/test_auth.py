"""AuthRepository against the real Papyrus API on loopback."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx
import pytest

from papyrus.client import (
    ApiError,
    AuthApiClient,
    AuthRepository,
    PapyrusApiConfig,
    SignedOutError,
    TokenStore,
    TransientError,
)
from papyrus.server.accounts import tokens as server_tokens
from papyrus.server.config import Settings
from tests.conftest import LiveServer

PASSWORD = "correct horse battery"


class Counter:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> None:
        with self.lock:
            self.paths.append(request.url.path)

    def count(self, path: str) -> int:
        return self.paths.count(path)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_repo(
    url: str, data_dir: Path, counter: Counter | None = None, clock: Clock | None = None
) -> AuthRepository:
    hooks = {"request": [counter]} if counter else {}
    http = httpx.Client(timeout=10, event_hooks=hooks)
    store = TokenStore.for_config(PapyrusApiConfig(data_dir=data_dir, token_store="file"))
    return AuthRepository(
        AuthApiClient(url, http=http), store, device_label="test box", clock=clock or Clock()
    )


def email() -> str:
    return f"reader-{uuid.uuid4().hex[:8]}@example.com"


def test_register_login_and_sessions_carry_client_info(
    live_server: LiveServer, tmp_path: Path
) -> None:
    repo = make_repo(live_server.url, tmp_path / "a")
    address = email()
    user = repo.register(address, PASSWORD, "Ada")
    assert user.email == address and repo.tokens.load_refresh_token()
    other = make_repo(live_server.url, tmp_path / "b")
    assert other.login(address, PASSWORD).id == user.id
    sessions = repo.authorized(repo.api.sessions)
    assert {s["client_type"] for s in sessions} == {"cli"}
    assert {s["device_label"] for s in sessions} == {"test box"}
    with pytest.raises(ApiError) as info:
        other.login(address, "wrong password!")
    assert info.value.status_code == 401 and info.value.code == "invalid_credentials"


def test_expired_access_token_is_refreshed_once_and_the_call_retried(
    live_server: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    counter = Counter()
    repo = make_repo(live_server.url, tmp_path, counter)
    user = repo.register(email(), PASSWORD, "Ada")
    first_refresh_token = repo.tokens.load_refresh_token()
    session_id = server_tokens.decode_access_token(
        settings.access_token_secret, repo.tokens.access_token or ""
    ).session_id
    repo.tokens.access_token = server_tokens.create_access_token(
        settings.access_token_secret, uuid.UUID(user.id), session_id, ttl_seconds=-60
    )
    assert repo.me().id == user.id
    assert counter.count("/v1/auth/refresh") == 1
    assert counter.count("/v1/users/me") == 2  # the 401, then the retry
    assert repo.tokens.load_refresh_token() != first_refresh_token  # rotated and stored


def test_access_token_is_refreshed_shortly_before_it_expires(
    live_server: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    counter, clock = Counter(), Clock()
    repo = make_repo(live_server.url, tmp_path, counter, clock)
    repo.register(email(), PASSWORD, "Ada")
    first = repo.tokens.access_token
    lifetime = settings.ACCESS_TOKEN_TTL_SECONDS
    clock.now += lifetime - 31
    repo.me()
    assert counter.count("/v1/auth/refresh") == 0 and repo.tokens.access_token == first
    clock.now += 2  # 29 s left: refreshed first, so the call needs no 401 round trip
    repo.me()
    assert counter.count("/v1/auth/refresh") == 1 and counter.count("/v1/users/me") == 2
    assert repo.tokens.access_token != first


def test_a_refresh_ahead_that_cannot_reach_the_server_keeps_the_token(
    live_server: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    clock = Clock()
    repo = make_repo(live_server.url, tmp_path, clock=clock)
    repo.register(email(), PASSWORD, "Ada")
    first = repo.tokens.access_token

    def unreachable(request: httpx.Request) -> None:
        if request.url.path == "/v1/auth/refresh":
            raise httpx.ConnectError("no route", request=request)

    repo.api.http.event_hooks["request"].append(unreachable)
    clock.now += settings.ACCESS_TOKEN_TTL_SECONDS - 10
    assert repo.me().email  # still valid: used as it is
    assert repo.tokens.access_token == first and repo.tokens.load_refresh_token()


def test_concurrent_refreshes_share_one_request(live_server: LiveServer, tmp_path: Path) -> None:
    counter = Counter()
    repo = make_repo(live_server.url, tmp_path, counter)
    repo.register(email(), PASSWORD, "Ada")
    repo.tokens.access_token = None  # as after a restart
    barrier = threading.Barrier(8)
    results: list[str] = []

    def call() -> None:
        barrier.wait()
        results.append(repo.refresh())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.count("/v1/auth/refresh") == 1
    assert len(set(results)) == 1 and len(results) == 8
    # The server revokes a session whose refresh token is reused; it is still alive.
    assert repo.me().email


def test_stale_401s_after_a_refresh_do_not_refresh_again(
    live_server: LiveServer, tmp_path: Path
) -> None:
    counter = Counter()
    repo = make_repo(live_server.url, tmp_path, counter)
    repo.register(email(), PASSWORD, "Ada")
    old = repo.tokens.access_token
    new = repo.refresh()
    assert repo.refresh(stale=old) == new  # someone already replaced the token
    assert counter.count("/v1/auth/refresh") == 1


def test_revoked_session_signs_the_client_out(live_server: LiveServer, tmp_path: Path) -> None:
    repo = make_repo(live_server.url, tmp_path / "a")
    address = email()
    repo.register(address, PASSWORD, "Ada")
    reasons: list[str] = []
    repo.on_signed_out(reasons.append)
    other = make_repo(live_server.url, tmp_path / "b")
    other.login(address, PASSWORD)
    other.authorized(lambda access: other.api.logout(access, all_devices=True))
    with pytest.raises(SignedOutError):
        repo.me()
    assert reasons == ["session_expired"]
    assert repo.tokens.load_refresh_token() is None and repo.tokens.access_token is None
    with pytest.raises(SignedOutError):
        repo.create_powersync_token()


def test_unreachable_server_keeps_the_session(tmp_path: Path) -> None:
    repo = make_repo("http://127.0.0.1:9", tmp_path)
    repo.tokens.save_refresh_token("kept")
    with pytest.raises(TransientError):
        repo.refresh()
    assert repo.tokens.load_refresh_token() == "kept"


def test_logout_ends_the_session_on_the_server(live_server: LiveServer, tmp_path: Path) -> None:
    repo = make_repo(live_server.url, tmp_path)
    repo.register(email(), PASSWORD, "Ada")
    stored = repo.tokens.load_refresh_token()
    repo.logout()
    assert repo.tokens.load_refresh_token() is None
    with pytest.raises(ApiError) as info:
        repo.api.refresh(stored or "")
    assert info.value.status_code == 401
