"""Google sign-in and the account lifecycle: a proven address keeps its password when Google
links, and a recent Google sign-in stands in for the password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from papyrus.server.config import Settings
from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import bearer, register
from tests.mailbox import mail_to, smtp_settings, token_of
from tests.server.oauth.conftest import TEST_BASE_URL, Flow, OpenIdProvider, oauth_settings

PASSWORD = "correct horse battery"


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[MailCatcher]:
    with MailCatcher() as catcher:
        yield catcher


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, provider: OpenIdProvider, mailbox: MailCatcher
) -> Settings:
    return oauth_settings(
        tmp_path, database_url, provider, TEST_BASE_URL, **smtp_settings(mailbox.port)
    )


def _login(client: TestClient, email: str) -> int:
    body = {"email": email, "password": PASSWORD, "client_type": "cli"}
    return client.post("/v1/auth/login", json=body).status_code


def test_a_verified_address_keeps_its_password_and_sessions_when_google_links(
    flow: Flow, provider: OpenIdProvider, client: TestClient, mailbox: MailCatcher, sql
) -> None:
    owner = register(client, email="owner@example.com", password=PASSWORD)
    token = token_of(mail_to(mailbox, "owner@example.com", "verify"))
    assert client.post("/v1/auth/verify-email", json={"token": token}).status_code == 200

    provider.set_user("owner-sub", email="owner@example.com", email_verified=True)
    google = flow.exchange(flow.sign_in_code("owner-sub")).json()
    assert google["user"]["id"] == owner["user"]["id"]
    assert google["user"]["has_password"] is True
    assert client.get("/v1/users/me", headers=bearer(owner["access_token"])).status_code == 200
    assert _login(client, "owner@example.com") == 200
    assert sql("SELECT count(*) FROM auth_sessions WHERE revoked_at IS NOT NULL") == [(0,)]
    assert sql("SELECT subject FROM oauth_identities") == [("owner-sub",)]


def test_an_unverified_address_still_loses_its_password_to_google(
    flow: Flow, provider: OpenIdProvider, client: TestClient
) -> None:
    squatter = register(client, email="victim@example.com", password=PASSWORD)
    provider.set_user("victim-sub", email="victim@example.com", email_verified=True)
    victim = flow.exchange(flow.sign_in_code("victim-sub")).json()
    assert victim["user"]["has_password"] is False
    assert client.get("/v1/users/me", headers=bearer(squatter["access_token"])).status_code == 401
    assert _login(client, "victim@example.com") == 401


def test_a_recent_google_sign_in_confirms_deletion_an_old_one_does_not(
    flow: Flow, client: TestClient, sql
) -> None:
    tokens = flow.exchange(flow.sign_in_code()).json()
    headers = bearer(tokens["access_token"])
    [(signed_in,)] = sql("SELECT google_authenticated_at IS NOT NULL FROM auth_sessions")
    assert signed_in
    sql("UPDATE auth_sessions SET google_authenticated_at = now() - interval '301 seconds'")
    stale = client.request("DELETE", "/v1/users/me", json={}, headers=headers)
    assert stale.status_code == 403
    assert stale.json()["error"]["code"] == "reauthentication_required"
    # A password sent for an account that has none proves nothing either.
    guessed = client.request("DELETE", "/v1/users/me", json={"password": "x"}, headers=headers)
    assert guessed.status_code == 403
    sql("UPDATE auth_sessions SET google_authenticated_at = now() - interval '60 seconds'")
    assert client.request("DELETE", "/v1/users/me", json={}, headers=headers).status_code == 204
    assert sql("SELECT count(*) FROM users") == [(0,)]
    assert sql("SELECT count(*) FROM oauth_identities") == [(0,)]


def test_linking_google_is_no_proof(
    flow: Flow, provider: OpenIdProvider, client: TestClient, sql
) -> None:
    """Someone holding a stolen session could link their own Google account: that must not
    let them delete the account without its password."""
    me = register(client, email="ada@example.com", password=PASSWORD)
    headers = bearer(me["access_token"])
    start = client.post(
        "/v1/auth/link/google/start",
        json={"redirect_uri": "http://127.0.0.1:43821/auth/callback"},
        headers=headers,
    )
    provider.set_user("thief-sub", email="thief@example.com", email_verified=True)
    query = flow.app_redirect(start.json()["authorization_url"], "thief-sub")
    linked = client.post(
        "/v1/auth/link/google/complete", json={"code": query["code"]}, headers=headers
    )
    assert linked.status_code == 200, linked.text
    refused = client.request("DELETE", "/v1/users/me", json={}, headers=headers)
    assert refused.status_code == 403
    assert sql("SELECT count(*) FROM users") == [(1,)]
