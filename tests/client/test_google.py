"""Google sign-in through the loopback listener, against the OpenID provider the server's
own tests use (oidc-provider-mock standing in for Google) and the real API on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from papyrus.client import (
    ApiError,
    AuthProvider,
    AuthState,
    PapyrusApiConfig,
    PendingChangesError,
    SignInError,
)
from papyrus.server.app import create_app
from papyrus.server.config import Settings
from tests.client.conftest import eventually
from tests.client.processes import Papyrus
from tests.conftest import LiveServer, free_port
from tests.server.oauth.conftest import OpenIdProvider, _s256, oauth_settings


@pytest.fixture
def provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        running.set_user(
            "alice-sub", email="alice@example.com", email_verified=True, name="Alice Liddell"
        )
        yield running


@pytest.fixture
def callback_port() -> int:
    return free_port()


@pytest.fixture
def api(
    tmp_path: Path, database_url: str, provider: OpenIdProvider, callback_port: int
) -> Iterator[LiveServer]:
    port = free_port()
    settings: Settings = oauth_settings(
        tmp_path,
        database_url,
        provider,
        f"http://127.0.0.1:{port}",
        OAUTH_APP_REDIRECT_URIS=[f"http://localhost:{callback_port}/auth/callback"],
    )
    app: FastAPI = create_app(settings)
    with LiveServer(app, port=port) as server:
        yield server


def browser(provider: OpenIdProvider, *, deny: bool = False):  # type: ignore[no-untyped-def]
    """A stand-in for the system browser: follows the redirects with an HTTP client."""
    opened: list[str] = []

    def open_url(url: str) -> None:
        opened.append(url)

        def run() -> None:
            with httpx.Client(timeout=10) as http:
                start = http.get(url, follow_redirects=False)
                at_provider = start.headers["location"]
                back = (
                    provider.deny(at_provider)
                    if deny
                    else provider.authorize(at_provider, "alice-sub")
                )
                to_app = http.get(back, follow_redirects=False)
                http.get(to_app.headers["location"])  # the loopback listener

        threading.Thread(target=run, daemon=True).start()

    return open_url, opened


def recording_http() -> tuple[httpx.Client, list[httpx.Request]]:
    """The client's HTTP client, keeping every request it sends."""
    sent: list[httpx.Request] = []
    return httpx.Client(timeout=20, event_hooks={"request": [sent.append]}), sent


def test_google_sign_in_through_the_loopback_listener(
    api: LiveServer, provider: OpenIdProvider, callback_port: int, tmp_path: Path, sql
) -> None:
    open_url, opened = browser(provider)
    config = PapyrusApiConfig(
        api_url=api.url,
        data_dir=tmp_path / "c",
        token_store="file",
        powersync_url="http://127.0.0.1:9",
    )
    http, sent = recording_http()
    with AuthProvider(config, http=http, open_browser=open_url, auto_connect=False) as app:
        user = app.sign_in_with_google(port=callback_port, timeout=30)
        assert user.email == "alice@example.com"
        assert app.state is AuthState.SIGNED_IN
        assert opened[0].startswith(f"{api.url}/v1/auth/oauth/google/start?redirect_uri=")
        assert f"localhost%3A{callback_port}%2Fauth%2Fcallback" in opened[0]
        assert app.auth.me().email == "alice@example.com"
        assert app.auth.tokens.load_refresh_token()

    # PKCE: the start URL carried an S256 challenge, and the exchange its verifier.
    start = {k: v[0] for k, v in parse_qs(urlsplit(opened[0]).query).items()}
    assert start["code_challenge_method"] == "S256"
    challenge = start["code_challenge"]
    exchanges = [r for r in sent if r.url.path == "/v1/auth/exchange-code"]
    assert len(exchanges) == 1
    body = json.loads(exchanges[0].content)
    verifier = body["code_verifier"]
    assert 43 <= len(verifier) <= 128 and verifier not in opened[0]
    assert _s256(verifier) == challenge
    # The server bound the code to that challenge, and the code is spent.
    assert sql("SELECT app_code_challenge, used_at IS NOT NULL FROM oauth_codes") == [
        (challenge, True)
    ]


def test_a_code_planted_on_the_listener_is_refused(
    api: LiveServer, provider: OpenIdProvider, callback_port: int, tmp_path: Path, sql
) -> None:
    """Someone delivers a code from their own sign-in (started without this client's challenge)
    to the waiting listener: exchanging it with this client's verifier fails, so the client
    does not end up signed in to their account."""
    provider.set_user("mallory-sub", email="mallory@example.com", email_verified=True)
    loopback = f"http://localhost:{callback_port}/auth/callback"

    def plant(url: str) -> None:
        def run() -> None:
            with httpx.Client(timeout=10) as http:
                start = http.get(
                    f"{api.url}/v1/auth/oauth/google/start",
                    params={"redirect_uri": loopback},
                    follow_redirects=False,
                )
                back = provider.authorize(start.headers["location"], "mallory-sub")
                to_app = http.get(back, follow_redirects=False)
                http.get(to_app.headers["location"])

        threading.Thread(target=run, daemon=True).start()

    config = PapyrusApiConfig(api_url=api.url, data_dir=tmp_path / "c", token_store="file")
    with AuthProvider(config, open_browser=plant, auto_connect=False) as app:
        with pytest.raises(ApiError) as refused:
            app.sign_in_with_google(port=callback_port, timeout=30)
        assert refused.value.code == "invalid_code"
        assert app.state is AuthState.SIGNED_OUT
        assert app.auth.tokens.load_refresh_token() is None
    assert sql("SELECT count(*) FROM auth_sessions") == [(0,)]
    assert sql("SELECT app_code_challenge, used_at IS NOT NULL FROM oauth_codes") == [(None, True)]


def test_a_denied_google_sign_in_fails_cleanly(
    api: LiveServer, provider: OpenIdProvider, callback_port: int, tmp_path: Path
) -> None:
    open_url, _ = browser(provider, deny=True)
    config = PapyrusApiConfig(api_url=api.url, data_dir=tmp_path / "c", token_store="file")
    with AuthProvider(config, open_browser=open_url, auto_connect=False) as app:
        with pytest.raises(SignInError, match="access_denied"):
            app.sign_in_with_google(port=callback_port, timeout=30)
        assert app.state is AuthState.SIGNED_OUT
        assert app.auth.tokens.load_refresh_token() is None


def test_google_sign_in_as_another_account_refuses_while_changes_wait(
    api: LiveServer, provider: OpenIdProvider, callback_port: int, tmp_path: Path, sql
) -> None:
    open_url, _ = browser(provider)
    config = PapyrusApiConfig(
        api_url=api.url,
        data_dir=tmp_path / "c",
        token_store="file",
        powersync_url="http://127.0.0.1:9",
    )
    with AuthProvider(config, open_browser=open_url, auto_connect=False) as app:
        app.register("ada@example.com", "correct horse battery", "Ada")
        app.library.add("Not uploaded yet")
        token = app.auth.tokens.load_refresh_token()
        with pytest.raises(PendingChangesError) as refused:
            app.sign_in_with_google(port=callback_port, timeout=30)
        assert refused.value.count == 1 and refused.value.owner_email == "ada@example.com"
        assert app.state is AuthState.SIGNED_IN and app.auth.me().email == "ada@example.com"
        assert app.auth.tokens.load_refresh_token() == token and app.pending_changes() == 1
        alice_sessions = (
            "SELECT count(*) FROM auth_sessions s JOIN users u ON u.id = s.user_id"
            " WHERE u.email = 'alice@example.com' AND s.revoked_at IS NULL"
        )
        assert sql(alice_sessions) == [(0,)]  # the refused sign-in's session was ended

        user = app.sign_in_with_google(port=callback_port, timeout=30, discard_pending=True)
        assert user.email == "alice@example.com" and app.pending_changes() == 0
        assert app.library.list() == []
        assert sql(alice_sessions) == [(1,)]


def test_login_google_from_the_command_line_prints_the_whole_url(
    api: LiveServer, provider: OpenIdProvider, callback_port: int, tmp_path: Path
) -> None:
    """The CLI checks the start URL first (it works here), prints it on one line even in a
    40-column terminal, and signs in once the browser has been through the flow."""
    env = {
        "PAPYRUS_CLIENT_DIR": str(tmp_path / "cli"),
        "PAPYRUS_TOKEN_STORE": "file",
        "PAPYRUS_API_URL": api.url,
        "POWERSYNC_SERVICE_URL": "http://127.0.0.1:9",
        "COLUMNS": "40",
    }
    args = ("login-google", "--no-browser", "--port", str(callback_port), "--timeout", "60")
    command = Papyrus(env, *args)
    start = f"{api.url}/v1/auth/oauth/google/start?"

    def url_line() -> str | None:
        return next((line for line in command.stdout.splitlines() if start in line), None)

    try:
        eventually(url_line, timeout=30)
        url = (url_line() or "").strip()
        assert url.startswith(start) and url.endswith("code_challenge_method=S256"), url
        open_url, _ = browser(provider)
        open_url(url)
        assert command.finish(60) == 0, command.stderr
    finally:
        command.interrupt()
    assert "Signed in as alice@example.com" in command.stdout
