"""Google sign-in end to end against a real OpenID provider on loopback."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer, register
from tests.server.oauth.conftest import APP_CALLBACK, Flow, OpenIdProvider, redirect_query


def test_start_redirects_to_provider_with_pkce_nonce_and_scopes(flow: Flow, sql) -> None:
    location = flow.start()
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == flow.client.app.state.settings.GOOGLE_OAUTH_CLIENT_ID
    assert query["redirect_uri"] == "http://testserver/v1/auth/oauth/google/callback"
    assert set(query["scope"].split()) == {"openid", "email", "profile"}
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert len(query["nonce"]) >= 32 and len(query["state"]) >= 32
    # Only the hash of the state is kept; the verifier and nonce stay server-side.
    rows = sql(
        "SELECT state_hash, redirect_uri, purpose, nonce, expires_at - created_at FROM oauth_states"
    )
    assert len(rows) == 1
    state_hash, redirect_uri, purpose, nonce, ttl = rows[0]
    assert bytes(state_hash) != query["state"].encode() and len(bytes(state_hash)) == 32
    assert (redirect_uri, purpose, nonce) == (APP_CALLBACK, "sign_in", query["nonce"])
    assert 590 <= ttl.total_seconds() <= 610


def test_full_flow_creates_user_and_tokens_work(
    flow: Flow, provider: OpenIdProvider, client: TestClient, sql
) -> None:
    response = flow.callback(provider.authorize(flow.start(), "alice-sub"))
    assert response.status_code == 302
    assert response.headers["cache-control"] == "no-store"
    code = redirect_query(response, APP_CALLBACK)["code"]
    assert provider.token_requests == 1  # PKCE verified by the provider's hook

    tokens = flow.exchange(code, device_label="Alice's laptop")
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer" and body["refresh_token"]
    me = client.get("/v1/users/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    user = me.json()
    assert user["email"] == "alice@example.com"
    assert user["email_verified"] is True
    assert user["display_name"] == "Alice Liddell"
    assert [(i["provider"], i["email"]) for i in user["identities"]] == [
        ("google", "alice@example.com")
    ]
    assert body["user"]["identities"] == user["identities"]
    assert sql("SELECT password_hash FROM users") == [(None,)]
    assert sql("SELECT client_type, device_label FROM auth_sessions") == [
        ("desktop", "Alice's laptop")
    ]
    # Only the code's hash is stored, and it is spent.
    (code_hash, used_at), *_ = sql("SELECT code_hash, used_at FROM oauth_codes")
    assert bytes(code_hash) != code.encode() and used_at is not None
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]
    # The session is an ordinary one: refresh works.
    refreshed = client.post("/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200


def test_second_sign_in_finds_the_same_user(flow: Flow, sql) -> None:
    first = flow.exchange(flow.sign_in_code()).json()
    second = flow.exchange(flow.sign_in_code()).json()
    assert first["user"]["id"] == second["user"]["id"]
    assert sql("SELECT count(*) FROM users") == [(1,)]
    assert sql("SELECT count(*) FROM oauth_identities") == [(1,)]


def test_identity_is_found_by_subject_even_after_email_change(
    flow: Flow, provider: OpenIdProvider, sql
) -> None:
    first = flow.exchange(flow.sign_in_code()).json()
    provider.set_user("alice-sub", email="alice@new.example.com", email_verified=True)
    second = flow.exchange(flow.sign_in_code()).json()
    assert second["user"]["id"] == first["user"]["id"]
    assert sql("SELECT email FROM oauth_identities") == [("alice@new.example.com",)]
    assert sql("SELECT email FROM users") == [("alice@example.com",)]


def test_verified_email_links_to_existing_password_account(
    flow: Flow, provider: OpenIdProvider, client: TestClient, sql
) -> None:
    existing = register(client, email="bob@example.com")
    provider.set_user("bob-sub", email="Bob@Example.com", email_verified=True, name="Bob")
    body = flow.exchange(flow.sign_in_code("bob-sub")).json()
    assert body["user"]["id"] == existing["user"]["id"]
    assert body["user"]["email_verified"] is True
    assert sql("SELECT count(*) FROM users") == [(1,)]
    assert sql("SELECT subject FROM oauth_identities") == [("bob-sub",)]


def test_linking_evicts_whoever_registered_the_email_first(
    flow: Flow, provider: OpenIdProvider, client: TestClient, sql
) -> None:
    """A squatter who registered someone else's address with a password must not keep access
    once the address's proven owner signs in with Google."""
    squatter = register(client, email="victim@example.com", password="squatter-pass")
    provider.set_user("victim-sub", email="victim@example.com", email_verified=True)
    victim = flow.exchange(flow.sign_in_code("victim-sub")).json()
    assert victim["user"]["id"] == squatter["user"]["id"]

    me = client.get("/v1/users/me", headers={"Authorization": f"Bearer {squatter['access_token']}"})
    assert me.status_code == 401
    refresh = client.post("/v1/auth/refresh", json={"refresh_token": squatter["refresh_token"]})
    assert refresh.status_code == 401
    login = client.post(
        "/v1/auth/login",
        json={"email": "victim@example.com", "password": "squatter-pass", "client_type": "cli"},
    )
    assert login.status_code == 401
    mine = client.get("/v1/users/me", headers={"Authorization": f"Bearer {victim['access_token']}"})
    assert mine.status_code == 200
    assert sql("SELECT password_hash IS NULL, email_verified FROM users") == [(True, True)]


def test_unverified_email_never_links_to_existing_account(
    flow: Flow, provider: OpenIdProvider, client: TestClient, sql
) -> None:
    register(client, email="carol@example.com")
    provider.set_user("mallory-sub", email="carol@example.com", email_verified=False)
    query = flow.app_redirect(flow.start(), "mallory-sub")
    assert query == {"error": "email_unverified"}
    assert sql("SELECT count(*) FROM oauth_identities") == [(0,)]
    assert sql("SELECT count(*) FROM oauth_codes") == [(0,)]
    assert sql("SELECT count(*) FROM users") == [(1,)]


def test_unverified_email_does_not_create_an_account(
    flow: Flow, provider: OpenIdProvider, sql
) -> None:
    # A user created under an unverified address could later be merged with its real owner.
    provider.set_user("dave-sub", email="dave@example.com", email_verified=False)
    assert flow.app_redirect(flow.start(), "dave-sub") == {"error": "email_unverified"}
    assert sql("SELECT count(*) FROM users") == [(0,)]


def test_identity_without_email_is_refused(flow: Flow, provider: OpenIdProvider, sql) -> None:
    provider.set_user("no-email-sub", name="Nobody")
    assert flow.app_redirect(flow.start(), "no-email-sub") == {"error": "email_missing"}
    assert sql("SELECT count(*) FROM users") == [(0,)]


def test_web_origin_callback_is_allowed(flow: Flow) -> None:
    code = flow.sign_in_code(redirect_uri="https://read.example.com/auth/callback")
    assert flow.exchange(code).status_code == 200


def test_browser_errors_render_a_page_for_browsers(client: TestClient) -> None:
    response = client.get(
        "/v1/auth/oauth/google/start",
        params={"redirect_uri": "https://evil.example/auth/callback"},
        headers={"Accept": "text/html,application/xhtml+xml"},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "invalid_redirect_uri" in response.text
    assert "evil.example" not in response.text
    assert "location" not in response.headers


def test_secrets_stay_out_of_server_logs(
    flow: Flow, provider: OpenIdProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    location = flow.start()
    state = parse_qs(urlsplit(location).query)["state"][0]
    code = flow.sign_in_code()
    tokens = flow.exchange(code).json()
    settings = flow.client.app.state.settings
    # Leave out the provider's own log and the requests this test makes as the "browser".
    browser = ("http://testserver/", "/oauth2/authorize")
    ours = [
        r
        for r in caplog.records
        if not r.name.startswith("werkzeug") and not any(b in r.getMessage() for b in browser)
    ]
    text = "\n".join(r.getMessage() for r in ours)
    assert "/oauth2/token" in text  # the server's own call to the token endpoint was logged
    for secret in (
        settings.GOOGLE_OAUTH_CLIENT_SECRET.get_secret_value(),
        state,
        code,
        tokens["refresh_token"],
    ):
        assert secret not in text
    assert settings.GOOGLE_OAUTH_CLIENT_SECRET.get_secret_value() not in repr(
        flow.client.app.state.oauth_google
    )
