"""PKCE between the app and Papyrus (RFC 7636, S256) for the one-time code.

A code delivered to `papyrus://auth/callback` can be received by any app registered for that
scheme (RFC 8252 8.1). Bound to the app's challenge, it is worthless without the verifier the
app never lets out of its process.
"""

from __future__ import annotations

import base64
import secrets
import string
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from papyrus.server.app import create_app
from tests.conftest import bearer, register
from tests.server.oauth.conftest import (
    APP_CALLBACK,
    TEST_BASE_URL,
    Flow,
    OpenIdProvider,
    _s256,
    oauth_settings,
    pkce,
    redirect_query,
)

MOBILE = "papyrus://auth/callback"
SIGN_IN_START = "/v1/auth/oauth/google/start"
LINK_START = "/v1/auth/link/google/start"


def table_counts(sql) -> dict[str, int]:
    tables = ("users", "oauth_identities", "auth_sessions", "refresh_tokens")
    return {t: sql(f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def used(sql) -> list[tuple[bool]]:
    return sql("SELECT used_at IS NOT NULL FROM oauth_codes")


def unknown_code_answer(flow: Flow) -> dict[str, Any]:
    response = flow.exchange(secrets.token_urlsafe(32))
    assert response.status_code == 400
    return response.json()


def start_link(
    client: TestClient, access_token: str, redirect_uri: str = MOBILE, **params: str
) -> httpx.Response:
    return client.post(
        LINK_START, json={"redirect_uri": redirect_uri, **params}, headers=bearer(access_token)
    )


def link_code(flow: Flow, access_token: str, redirect_uri: str = MOBILE, **params: str) -> str:
    started = start_link(flow.client, access_token, redirect_uri, **params)
    assert started.status_code == 200, started.text
    callback = flow.provider.authorize(started.json()["authorization_url"], "alice-sub")
    response = flow.callback(callback)
    assert response.status_code == 302, response.text
    return redirect_query(response, redirect_uri)["code"]


def complete_link(
    client: TestClient, access_token: str, code: str, verifier: str | None = None
) -> httpx.Response:
    body = {"code": code} if verifier is None else {"code": code, "code_verifier": verifier}
    return client.post("/v1/auth/link/google/complete", json=body, headers=bearer(access_token))


# --- happy paths --------------------------------------------------------------------------------


def test_mobile_sign_in_with_pkce(flow: Flow, client: TestClient, sql) -> None:
    verifier, params = pkce()
    location = flow.start(MOBILE, **params)
    # Papyrus runs its own PKCE with the provider; the app's challenge never goes there.
    to_provider = parse_qs(urlsplit(location).query)
    assert to_provider["code_challenge"] != [params["code_challenge"]]
    assert sql("SELECT app_code_challenge FROM oauth_states") == [(params["code_challenge"],)]

    response = flow.callback(flow.provider.authorize(location, "alice-sub"))
    assert response.status_code == 302
    code = redirect_query(response, MOBILE)["code"]
    assert sql("SELECT app_code_challenge FROM oauth_codes") == [(params["code_challenge"],)]

    tokens = flow.exchange(code, code_verifier=verifier, client_type="mobile")
    assert tokens.status_code == 200, tokens.text
    me = client.get("/v1/users/me", headers=bearer(tokens.json()["access_token"]))
    assert me.json()["email"] == "alice@example.com"
    assert sql("SELECT client_type FROM auth_sessions") == [("mobile",)]
    # Still single use.
    again = flow.exchange(code, code_verifier=verifier)
    assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_code"
    assert sql("SELECT count(*) FROM auth_sessions") == [(1,)]


def test_loopback_sign_in_with_pkce(flow: Flow) -> None:
    verifier, params = pkce()
    code = flow.sign_in_code(redirect_uri=APP_CALLBACK, **params)
    assert flow.exchange(code, code_verifier=verifier).status_code == 200


def test_loopback_and_web_sign_in_without_pkce_still_work(flow: Flow) -> None:
    assert flow.exchange(flow.sign_in_code(redirect_uri=APP_CALLBACK)).status_code == 200
    web = flow.sign_in_code(redirect_uri="https://read.example.com/auth/callback")
    assert flow.exchange(web).status_code == 200


def test_mobile_link_with_pkce(flow: Flow, client: TestClient, sql) -> None:
    me = register(client, email="reader@example.org")
    verifier, params = pkce()
    code = link_code(flow, me["access_token"], MOBILE, **params)
    assert sql("SELECT purpose, app_code_challenge FROM oauth_codes") == [
        ("link", params["code_challenge"])
    ]
    response = complete_link(client, me["access_token"], code, verifier)
    assert response.status_code == 200, response.text
    assert [i["provider"] for i in response.json()["identities"]] == ["google"]
    assert complete_link(client, me["access_token"], code, verifier).status_code == 400


# --- hostile exchanges --------------------------------------------------------------------------

# How the code was started, and the verifier the attacker (or a confused client) sends.
HOSTILE_EXCHANGES = {
    # An app that intercepted the code guesses a verifier.
    "wrong-verifier": (True, lambda verifier: secrets.token_urlsafe(48)),
    # It does not even try.
    "missing-verifier": (True, lambda verifier: None),
    # A code started without a challenge (an attacker's own) injected into an app that sent one:
    # refused (RFC 9700 2.1.1), or the victim's app would sign in to the attacker's account.
    "verifier-without-challenge": (False, lambda verifier: verifier),
}


@pytest.mark.parametrize("case", HOSTILE_EXCHANGES, ids=list(HOSTILE_EXCHANGES))
def test_hostile_sign_in_exchange_is_refused_and_burns_the_code(flow: Flow, sql, case: str) -> None:
    with_challenge, sent = HOSTILE_EXCHANGES[case]
    verifier, params = pkce()
    if with_challenge:
        code = flow.sign_in_code(redirect_uri=MOBILE, **params)
    else:
        code = flow.sign_in_code(redirect_uri=APP_CALLBACK)
    before = table_counts(sql)  # the callback already found or created the user
    hostile = sent(verifier)
    extra = {} if hostile is None else {"code_verifier": hostile}

    response = flow.exchange(code, **extra)
    assert response.status_code == 400
    # The very answer an unknown code gets: nothing tells the code was real.
    assert response.json() == unknown_code_answer(flow)
    assert "access_token" not in response.text
    assert table_counts(sql) == before
    assert before["auth_sessions"] == 0 and before["refresh_tokens"] == 0
    # Burnt: not even the genuine app can use it now.
    assert used(sql) == [(True,)]
    genuine = {"code_verifier": verifier} if with_challenge else {}
    after = flow.exchange(code, **genuine)
    assert after.status_code == 400 and after.json()["error"]["code"] == "invalid_code"
    assert table_counts(sql) == before


@pytest.mark.parametrize("case", HOSTILE_EXCHANGES, ids=list(HOSTILE_EXCHANGES))
def test_hostile_link_completion_is_refused_and_burns_the_code(
    flow: Flow, client: TestClient, sql, case: str
) -> None:
    me = register(client)
    with_challenge, sent = HOSTILE_EXCHANGES[case]
    verifier, params = pkce()
    if with_challenge:
        code = link_code(flow, me["access_token"], MOBILE, **params)
    else:
        code = link_code(flow, me["access_token"], APP_CALLBACK)
    before = table_counts(sql)

    response = complete_link(client, me["access_token"], code, sent(verifier))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_code"
    assert table_counts(sql) == before
    assert sql("SELECT count(*) FROM oauth_identities") == [(0,)]
    assert used(sql) == [(True,)]
    after = complete_link(client, me["access_token"], code, verifier if with_challenge else None)
    assert after.status_code == 400 and after.json()["error"]["code"] == "invalid_code"
    listed = client.get("/v1/users/me", headers=bearer(me["access_token"])).json()
    assert listed["identities"] == []


@pytest.mark.parametrize(
    "bad_verifier",
    ["a" * 42, "a" * 129, "+" * 43, "a" * 42 + "=", "a" * 42 + "é", "a" * 21 + " " + "a" * 21],
    ids=["too-short", "too-long", "plus", "padding", "non-ascii", "space"],
)
def test_malformed_verifier_is_a_validation_error_that_leaves_the_code(
    flow: Flow, sql, bad_verifier: str
) -> None:
    """It cannot match any challenge, so it is refused before the code is even looked up."""
    verifier, params = pkce()
    code = flow.sign_in_code(redirect_uri=MOBILE, **params)
    response = flow.exchange(code, code_verifier=bad_verifier)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert bad_verifier not in response.text and code not in response.text
    assert sql("SELECT count(*) FROM auth_sessions") == [(0,)]
    assert used(sql) == [(False,)]
    assert flow.exchange(code, code_verifier=verifier).status_code == 200


# --- hostile starts -----------------------------------------------------------------------------

VALID_CHALLENGE = _s256("v" * 43)
# 43 characters carry 2 spare bits; a challenge with them set decodes to the same digest, but no
# encoder writes it, so no verifier can ever match it.
_BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
NON_CANONICAL = VALID_CHALLENGE[:42] + _BASE64URL[_BASE64URL.index(VALID_CHALLENGE[42]) + 1]

MALFORMED_CHALLENGES = {
    "empty": "",
    "too-short": VALID_CHALLENGE[:42],
    "44-chars": VALID_CHALLENGE + "A",
    "128-chars": "A" * 128,
    "129-chars": "A" * 129,
    "padding": VALID_CHALLENGE[:42] + "=",
    "standard-base64": "+/" + VALID_CHALLENGE[2:],
    "non-ascii": VALID_CHALLENGE[:42] + "é",
    "space": VALID_CHALLENGE[:21] + " " + VALID_CHALLENGE[22:],
    "non-canonical": NON_CANONICAL,
}
NOTHING = {"users": 0, "oauth_identities": 0, "auth_sessions": 0, "refresh_tokens": 0}


def test_non_canonical_challenge_is_what_it_claims() -> None:
    def decode(value: str) -> bytes:
        return base64.urlsafe_b64decode(value + "=")

    assert NON_CANONICAL != VALID_CHALLENGE
    assert decode(NON_CANONICAL) == decode(VALID_CHALLENGE)


# (code_challenge, code_challenge_method, redirect_uri) -> the error code.
REFUSED_STARTS: dict[str, tuple[str | None, str | None, str, str]] = {
    **{
        f"malformed-{name}": (challenge, "S256", MOBILE, "invalid_code_challenge")
        for name, challenge in MALFORMED_CHALLENGES.items()
    },
    "method-plain": (VALID_CHALLENGE, "plain", MOBILE, "unsupported_code_challenge_method"),
    "plain-on-loopback": (
        "v" * 43,
        "plain",
        APP_CALLBACK,
        "unsupported_code_challenge_method",
    ),
    "method-missing": (VALID_CHALLENGE, None, MOBILE, "unsupported_code_challenge_method"),
    "method-lowercase": (VALID_CHALLENGE, "s256", MOBILE, "unsupported_code_challenge_method"),
    "method-S512": (VALID_CHALLENGE, "S512", MOBILE, "unsupported_code_challenge_method"),
    "method-without-challenge": (None, "S256", MOBILE, "invalid_code_challenge"),
    "custom-scheme-without-challenge": (None, None, MOBILE, "code_challenge_required"),
}


def _params(challenge: str | None, method: str | None) -> dict[str, str]:
    params = {"code_challenge": challenge, "code_challenge_method": method}
    return {k: v for k, v in params.items() if v is not None}


@pytest.mark.parametrize("case", REFUSED_STARTS, ids=list(REFUSED_STARTS))
def test_sign_in_start_refuses_bad_pkce(
    client: TestClient, provider: OpenIdProvider, sql, case: str
) -> None:
    challenge, method, redirect_uri, error = REFUSED_STARTS[case]
    response = client.get(
        SIGN_IN_START,
        params={"redirect_uri": redirect_uri, **_params(challenge, method)},
        follow_redirects=False,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == error
    assert "location" not in response.headers and "set-cookie" not in response.headers
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]
    assert table_counts(sql) == NOTHING
    assert provider.token_requests == 0


@pytest.mark.parametrize("case", REFUSED_STARTS, ids=list(REFUSED_STARTS))
def test_link_start_refuses_bad_pkce(client: TestClient, sql, case: str) -> None:
    me = register(client)
    before = table_counts(sql)
    challenge, method, redirect_uri, error = REFUSED_STARTS[case]
    response = start_link(client, me["access_token"], redirect_uri, **_params(challenge, method))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == error
    assert "authorization_url" not in response.text
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]
    assert table_counts(sql) == before


def test_bad_pkce_start_renders_the_error_page_for_browsers(client: TestClient, sql) -> None:
    response = client.get(
        SIGN_IN_START,
        params={"redirect_uri": MOBILE, "code_challenge": VALID_CHALLENGE},
        headers={"Accept": "text/html"},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "unsupported_code_challenge_method" in response.text
    assert "location" not in response.headers
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]


def test_custom_scheme_without_pkce_when_the_operator_allows_it(
    provider: OpenIdProvider, tmp_path: Path, database_url: str, sql
) -> None:
    settings = oauth_settings(
        tmp_path,
        database_url,
        provider,
        TEST_BASE_URL,
        OAUTH_REQUIRE_APP_PKCE_FOR_CUSTOM_SCHEMES=False,
    )
    with TestClient(create_app(settings)) as client:
        flow = Flow(client, provider, TEST_BASE_URL)
        code = flow.sign_in_code(redirect_uri=MOBILE)
        assert sql("SELECT app_code_challenge FROM oauth_codes") == [(None,)]
        assert flow.exchange(code).status_code == 200
        # A challenge, when sent, is still enforced.
        verifier, params = pkce()
        bound = flow.sign_in_code(redirect_uri=MOBILE, **params)
        assert flow.exchange(bound).status_code == 400
        assert flow.exchange(bound, code_verifier=verifier).status_code == 400  # burnt


def test_requirement_is_on_by_default(settings) -> None:
    assert settings.OAUTH_REQUIRE_APP_PKCE_FOR_CUSTOM_SCHEMES is True


def test_openapi_documents_the_pkce_fields(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    start = spec["paths"][SIGN_IN_START]["get"]["parameters"]
    assert {"code_challenge", "code_challenge_method"} <= {p["name"] for p in start}
    schemas = spec["components"]["schemas"]
    for name in ("ExchangeCodeRequest", "LinkCompleteRequest"):
        assert "code_verifier" in schemas[name]["properties"]
    assert "code_challenge" in schemas["LinkStartRequest"]["properties"]
