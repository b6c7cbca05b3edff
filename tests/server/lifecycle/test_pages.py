"""The pages mailed links open (`lifecycle/pages.py`): each is served with a script policy that
allows exactly its inline script, opening one changes nothing, and in a real browser its button
does what the link promised. Links follow `APP_LINK_BASE_URL` when it is set."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from papyrus.server.app import create_app
from papyrus.server.lifecycle.mails import CONFIRM_CHANGE_PATH, RESET_PATH, VERIFY_PATH
from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import LiveServer, bearer, free_port, make_settings, register, wait_for
from tests.mailbox import mail_to, smtp_settings, token_of
from tests.server.oauth.test_browser import CHROMIUM, CHROMIUM_ARGS

PASSWORD = "correct horse battery"
PAGES = [VERIFY_PATH, RESET_PATH, CONFIRM_CHANGE_PATH]


def _tables(sql: Any) -> list[str]:
    rows = sql(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    )
    return [name for (name,) in rows]


def snapshot(sql: Any) -> dict[str, list[str]]:
    """Every row of every table, as text: what "nothing changed" is compared on."""
    return {
        table: sorted(row for (row,) in sql(f"SELECT t::text FROM {table} t"))
        for table in _tables(sql)
    }


def _pending_links(client: TestClient, mailbox: MailCatcher) -> dict[str, str]:
    """An account with one live link of each kind; the page path -> its token."""
    me = register(client, email="ada@example.com", password=PASSWORD)
    verify = token_of(mail_to(mailbox, "ada@example.com", "verify"))
    client.post("/v1/auth/password/forgot", json={"email": "ada@example.com"})
    reset = token_of(mail_to(mailbox, "ada@example.com", "reset"))
    changed = client.post(
        "/v1/users/me/email",
        json={"new_email": "ada.new@example.com", "password": PASSWORD},
        headers=bearer(me["access_token"]),
    )
    assert changed.status_code == 202, changed.text
    confirm = token_of(mail_to(mailbox, "ada.new@example.com", "confirm_change"))
    return {VERIFY_PATH: verify, RESET_PATH: reset, CONFIRM_CHANGE_PATH: confirm}


@pytest.mark.parametrize("path", PAGES)
def test_each_page_allows_exactly_its_inline_script(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "form-action 'none'" in policy
    # The one script the policy allows is the page's own, byte for byte: a browser would refuse
    # to run it otherwise, and the button would do nothing.
    scripts = re.findall(r"<script>(.*?)</script>", page.text, re.S)
    assert len(scripts) == 1
    allowed = re.findall(r"'sha256-([A-Za-z0-9+/=]+)'", policy)
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert allowed == [digest]
    assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";", 1)[0]


def test_opening_a_page_changes_nothing(client: TestClient, mailbox: MailCatcher, sql: Any) -> None:
    """Mail scanners and link previews open links: only the page's button may spend a token.
    Even a token put in the query string (where a page never reads it) changes nothing."""
    tokens = _pending_links(client, mailbox)
    wait_for(lambda: sql("SELECT count(*) FROM mail_outbox") == [(0,)], what="outbox drained")
    before = snapshot(sql)
    for path, token in tokens.items():
        for url in (path, f"{path}?token={token}", f"{path}#token={token}"):
            assert client.get(url).status_code == 200
            client.head(url)  # a link checker's probe (405 here): no change either
    assert snapshot(sql) == before
    # Every token still works, once.
    verified = client.post("/v1/auth/verify-email", json={"token": tokens[VERIFY_PATH]})
    assert verified.status_code == 200, verified.text
    confirmed = client.post(
        "/v1/auth/email/confirm-change", json={"token": tokens[CONFIRM_CHANGE_PATH]}
    )
    assert confirmed.status_code == 200, confirmed.text


def test_links_use_app_link_base_url_when_set(tmp_path: Path, database_url: str) -> None:
    base = "https://read.example.com/app"
    with MailCatcher() as mailbox:
        settings = make_settings(
            tmp_path,
            database_url,
            PUBLIC_BASE_URL="https://api.example.com",
            APP_LINK_BASE_URL=f"{base}/",
            **smtp_settings(mailbox.port),
        )
        with TestClient(create_app(settings)) as client:
            _pending_links(client, mailbox)
            mails = {
                VERIFY_PATH: mail_to(mailbox, "ada@example.com", "verify"),
                RESET_PATH: mail_to(mailbox, "ada@example.com", "reset"),
                CONFIRM_CHANGE_PATH: mail_to(mailbox, "ada.new@example.com", "confirm_change"),
            }
    for path, mail in mails.items():
        [link] = [link for link in mail.links if "#token=" in link]
        assert link.startswith(f"{base}{path}#token="), link
        assert link in mail.body("html")
        assert "api.example.com" not in mail.body() + mail.body("html")


# --- in a real browser -------------------------------------------------------------------------


@pytest.fixture
def chromium_path() -> str:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run scripts/ensure-chromium.sh")
    return str(CHROMIUM)


@pytest.fixture
def live(tmp_path: Path, database_url: str, mailbox: MailCatcher) -> Iterator[LiveServer]:
    """The API on loopback, its links pointing at itself (as `papyrus dev` sets it up)."""
    port = free_port()
    settings = make_settings(
        tmp_path,
        database_url,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        **smtp_settings(mailbox.port),
    )
    with LiveServer(create_app(settings), port=port) as server:
        yield server


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_the_mailed_links_work_in_a_real_browser(
    chromium_path: str, live: LiveServer, mailbox: MailCatcher
) -> None:
    """The verification link from the mail, opened and confirmed with its button; then a reset
    link, with the new password typed twice."""
    from playwright.sync_api import expect, sync_playwright

    with httpx.Client(base_url=live.url) as http:
        registered = http.post(
            "/v1/auth/register",
            json={
                "email": "ada@example.com",
                "password": PASSWORD,
                "display_name": "Ada",
                "client_type": "web",
            },
        )
        assert registered.status_code == 201, registered.text
        access = registered.json()["access_token"]
        [verify_link] = [
            link
            for link in mail_to(mailbox, "ada@example.com", "verify").links
            if "#token=" in link
        ]
        assert verify_link.startswith(f"{live.url}{VERIFY_PATH}#token=")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page()
                page.goto(verify_link)
                assert (
                    http.get("/v1/users/me", headers=bearer(access)).json()["email_verified"]
                    is False
                )
                page.click("button:has-text('Confirm my address')")
                # (Waited on through the DOM: the page's policy forbids evaluated scripts.)
                expect(page.locator("#out")).to_have_text(
                    "Your address is confirmed. You can close this page.", timeout=15_000
                )
                assert "#token=" not in page.url  # the spent token leaves the address bar
                me = http.get("/v1/users/me", headers=bearer(access))
                assert me.status_code == 200 and me.json()["email_verified"] is True

                # The reset page: two password fields, checked alike before anything is sent.
                assert (
                    http.post(
                        "/v1/auth/password/forgot", json={"email": "ada@example.com"}
                    ).status_code
                    == 202
                )
                [reset_link] = [
                    link
                    for link in mail_to(mailbox, "ada@example.com", "reset").links
                    if "#token=" in link
                ]
                page.goto(reset_link)
                page.fill("#password", "a brand new password")
                page.fill("#again", "a different password")
                page.click("button:has-text('Set the password')")
                expect(page.locator("#out")).to_have_text("The two passwords differ.")
                page.fill("#again", "a brand new password")
                page.click("button:has-text('Set the password')")
                expect(page.locator("#out")).to_contain_text("Your password is set", timeout=15_000)
            finally:
                browser.close()
        login = http.post(
            "/v1/auth/login",
            json={
                "email": "ada@example.com",
                "password": "a brand new password",
                "client_type": "web",
            },
        )
        assert login.status_code == 200, login.text
        # The reset ended every session, the one that registered too.
        assert http.get("/v1/users/me", headers=bearer(access)).status_code == 401
