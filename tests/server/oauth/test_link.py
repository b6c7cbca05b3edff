"""Linking a Google account to a signed-in user."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import bearer, register
from tests.server.oauth.conftest import APP_CALLBACK, Flow, OpenIdProvider


def link_code(flow: Flow, access_token: str, sub: str = "alice-sub") -> str:
    started = flow.client.post(
        "/v1/auth/link/google/start",
        json={"redirect_uri": APP_CALLBACK},
        headers=bearer(access_token),
    )
    assert started.status_code == 200, started.text
    url = started.json()["authorization_url"]
    assert url.startswith(f"{flow.provider.issuer}/oauth2/authorize?")
    query = flow.app_redirect(url, sub)
    assert "code" in query, query
    return query["code"]


def complete(client: TestClient, access_token: str, code: str):
    return client.post(
        "/v1/auth/link/google/complete", json={"code": code}, headers=bearer(access_token)
    )


def test_link_flow_adds_identity_to_signed_in_user(flow: Flow, client: TestClient, sql) -> None:
    # A different email: linking is explicit, so it does not need to match.
    me = register(client, email="reader@example.org")
    code = link_code(flow, me["access_token"])
    assert sql("SELECT purpose FROM oauth_codes") == [("link",)]
    assert sql("SELECT count(*) FROM oauth_identities") == [(0,)]  # not before completion

    response = complete(client, me["access_token"], code)
    assert response.status_code == 200, response.text
    assert [i["provider"] for i in response.json()["identities"]] == ["google"]
    listed = client.get("/v1/users/me", headers=bearer(me["access_token"])).json()
    assert listed["identities"][0]["email"] == "alice@example.com"
    assert listed["email"] == "reader@example.org"

    # Google sign-in now opens the linked account.
    signed_in = flow.exchange(flow.sign_in_code()).json()
    assert signed_in["user"]["id"] == me["user"]["id"]
    assert sql("SELECT count(*) FROM users") == [(1,)]


def test_link_start_requires_sign_in(client: TestClient, sql) -> None:
    response = client.post("/v1/auth/link/google/start", json={"redirect_uri": APP_CALLBACK})
    assert response.status_code == 401
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]


def test_link_start_refuses_unlisted_redirect_uri(client: TestClient, sql) -> None:
    me = register(client)
    response = client.post(
        "/v1/auth/link/google/start",
        json={"redirect_uri": "https://evil.example/auth/callback"},
        headers=bearer(me["access_token"]),
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_redirect_uri"
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]


def test_identity_of_another_user_is_a_conflict(flow: Flow, client: TestClient, sql) -> None:
    owner = flow.exchange(flow.sign_in_code()).json()  # alice-sub now belongs to a new user
    other = register(client)
    response = complete(client, other["access_token"], link_code(flow, other["access_token"]))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "identity_taken"
    assert sql("SELECT user_id::text FROM oauth_identities") == [(owner["user"]["id"],)]
    me = client.get("/v1/users/me", headers=bearer(other["access_token"])).json()
    assert me["identities"] == []


def test_linking_twice_is_harmless(flow: Flow, client: TestClient, sql) -> None:
    me = register(client)
    assert complete(client, me["access_token"], link_code(flow, me["access_token"])).is_success
    again = complete(client, me["access_token"], link_code(flow, me["access_token"]))
    assert again.status_code == 200
    assert sql("SELECT count(*) FROM oauth_identities") == [(1,)]


def test_link_code_only_works_for_the_user_who_started(flow: Flow, client: TestClient, sql) -> None:
    victim = register(client)
    attacker = register(client)
    code = link_code(flow, attacker["access_token"])
    response = complete(client, victim["access_token"], code)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_code"
    assert sql("SELECT count(*) FROM oauth_identities") == [(0,)]


def test_link_code_is_not_a_sign_in_code(flow: Flow, client: TestClient, sql) -> None:
    me = register(client)
    code = link_code(flow, me["access_token"])
    response = flow.exchange(code)
    assert response.status_code == 400
    assert sql("SELECT count(*) FROM auth_sessions") == [(1,)]
    assert complete(client, me["access_token"], code).status_code == 200  # still unspent


def test_sign_in_code_is_not_a_link_code(
    flow: Flow, provider: OpenIdProvider, client: TestClient, sql
) -> None:
    me = register(client)
    provider.set_user("eve-sub", email="eve@example.com", email_verified=True)
    code = flow.sign_in_code("eve-sub")
    assert complete(client, me["access_token"], code).status_code == 400
    me_after = client.get("/v1/users/me", headers=bearer(me["access_token"])).json()
    assert me_after["identities"] == []


def test_link_code_works_once(flow: Flow, client: TestClient) -> None:
    me = register(client)
    code = link_code(flow, me["access_token"])
    assert complete(client, me["access_token"], code).status_code == 200
    assert complete(client, me["access_token"], code).status_code == 400


def test_link_with_unverified_google_email_is_allowed(
    flow: Flow, provider: OpenIdProvider, client: TestClient
) -> None:
    """Linking is proven by the signed-in session, not by the email."""
    provider.set_user("frank-sub", email="frank@example.com", email_verified=False)
    me = register(client)
    code = link_code(flow, me["access_token"], "frank-sub")
    assert complete(client, me["access_token"], code).status_code == 200
