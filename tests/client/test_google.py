"""Google sign-in through the loopback listener, against the OpenID provider the server's
own tests use (oidc-provider-mock standing in for Google) and the real API on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from papyrus.client import AuthProvider, AuthState, PapyrusApiConfig, SignInError
from papyrus.server.app import create_app
from papyrus.server.config import Settings
from tests.conftest import LiveServer, free_port
from tests.server.oauth.conftest import OpenIdProvider, oauth_settings


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


def test_google_sign_in_through_the_loopback_listener(
    api: LiveServer, provider: OpenIdProvider, callback_port: int, tmp_path: Path
) -> None:
    open_url, opened = browser(provider)
    config = PapyrusApiConfig(
        api_url=api.url,
        data_dir=tmp_path / "c",
        token_store="file",
        powersync_url="http://127.0.0.1:9",
    )
    with AuthProvider(config, open_browser=open_url, auto_connect=False) as app:
        user = app.sign_in_with_google(port=callback_port, timeout=30)
        assert user.email == "alice@example.com"
        assert app.state is AuthState.SIGNED_IN
        assert opened[0].startswith(f"{api.url}/v1/auth/oauth/google/start?redirect_uri=")
        assert f"localhost%3A{callback_port}%2Fauth%2Fcallback" in opened[0]
        assert app.auth.me().email == "alice@example.com"
        assert app.auth.tokens.load_refresh_token()


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
