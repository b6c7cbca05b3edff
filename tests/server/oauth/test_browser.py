"""The whole sign-in in a real browser: Papyrus start URL -> provider page -> app callback."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from papyrus.server.app import create_app
from tests.conftest import LiveServer, bearer, free_port
from tests.server.oauth.conftest import APP_CALLBACK, OpenIdProvider, oauth_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class AppCallbackListener:
    """What the desktop app runs on 127.0.0.1:43821 to receive the one-time code."""

    def __init__(self) -> None:
        self.received: list[dict[str, list[str]]] = []
        self.arrived = threading.Event()
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/auth/callback":
                    self.send_error(404)
                    return
                listener.received.append(parse_qs(url.query))
                listener.arrived.set()
                body = b"<!doctype html><title>Papyrus</title><h1>Signed in</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        host, port = urlsplit(APP_CALLBACK).hostname, urlsplit(APP_CALLBACK).port
        try:
            self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            pytest.fail(f"the app callback port {port} is busy: {exc}")
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> AppCallbackListener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chromium_path() -> str:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run scripts/ensure-chromium.sh")
    return str(CHROMIUM)


@pytest.fixture
def live_papyrus(
    provider: OpenIdProvider, tmp_path: Path, database_url: str
) -> Iterator[LiveServer]:
    port = free_port()
    settings = oauth_settings(tmp_path, database_url, provider, f"http://127.0.0.1:{port}")
    with LiveServer(create_app(settings), port=port) as server:
        yield server


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_sign_in_in_a_real_browser(
    chromium_path: str, provider: OpenIdProvider, live_papyrus: LiveServer, sql
) -> None:
    from playwright.sync_api import sync_playwright

    start_url = httpx.URL(
        f"{live_papyrus.url}/v1/auth/oauth/google/start", params={"redirect_uri": APP_CALLBACK}
    )
    with AppCallbackListener() as app_callback, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(str(start_url))
            # The provider's own authorization page, reached through Papyrus's redirect.
            assert page.url.startswith(f"{provider.issuer}/oauth2/authorize?")
            page.fill("input[name=sub]", "alice-sub")
            page.click("button:has-text('Authorize')")
            page.wait_for_url(f"{APP_CALLBACK}?**", timeout=30_000)
            assert page.locator("h1").inner_text() == "Signed in"
        finally:
            browser.close()
        assert app_callback.arrived.wait(5)

    (query,) = app_callback.received
    assert set(query) == {"code"}
    code = query["code"][0]
    with httpx.Client(base_url=live_papyrus.url) as http:
        tokens = http.post(
            "/v1/auth/exchange-code",
            json={"code": code, "client_type": "desktop", "device_label": "browser test"},
        )
        assert tokens.status_code == 200, tokens.text
        me = http.get("/v1/users/me", headers=bearer(tokens.json()["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"
    assert [i["provider"] for i in me.json()["identities"]] == ["google"]
    assert sql("SELECT count(*) FROM auth_sessions") == [(1,)]
