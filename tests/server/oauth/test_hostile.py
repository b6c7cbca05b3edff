"""Hostile inputs at every step; each asserts nothing was created, linked or redirected."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from papyrus.server.app import create_app
from papyrus.server.oauth.service import browser_cookie_name
from tests.conftest import LiveServer, bearer, free_port, register
from tests.server.oauth.conftest import (
    APP_CALLBACK,
    Flow,
    OpenIdProvider,
    oauth_settings,
    pkce,
    redirect_query,
)

_CHALLENGE = pkce()[1]["code_challenge"]
_CALLBACK_Q = quote(APP_CALLBACK, safe="")


def table_counts(sql) -> dict[str, int]:
    tables = ("users", "oauth_identities", "oauth_codes", "auth_sessions")
    return {t: sql(f"SELECT count(*) FROM {t}")[0][0] for t in tables}


NOTHING = {"users": 0, "oauth_identities": 0, "oauth_codes": 0, "auth_sessions": 0}


# --- redirect_uri -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/auth/callback",
        "papyrus://auth/callback/extra",
        "http://127.0.0.1:43821/auth/callback/../../steal",
        "papyrus://auth/callback?next=https://evil.example",
        "http://localhost:43821/auth/callback#fragment",
        "https://read.example.com.evil.example/auth/callback",
        "https://read.example.com/auth/callback/",
        "PAPYRUS://auth/callback",
        "http://localhost:43822/auth/callback",
        "javascript:alert(document.cookie)",
        "javascript://auth/callback%0aalert(1)",
        "",
    ],
)
def test_start_refuses_unlisted_redirect_uri(client: TestClient, sql, redirect_uri: str) -> None:
    response = client.get(
        "/v1/auth/oauth/google/start",
        params={"redirect_uri": redirect_uri},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_redirect_uri"
    assert "location" not in response.headers
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]


def test_start_without_redirect_uri_is_refused(client: TestClient, sql) -> None:
    response = client.get("/v1/auth/oauth/google/start", follow_redirects=False)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_redirect_uri"
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]


# --- state --------------------------------------------------------------------------------------


def _assert_refused_without_redirect(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_state"
    assert "location" not in response.headers


def test_callback_without_state_redirects_nowhere(flow: Flow, sql) -> None:
    callback = flow.provider.authorize(flow.start(), "alice-sub")
    without_state = callback.replace("state=", "ignored=")
    _assert_refused_without_redirect(flow.callback(without_state))
    assert flow.provider.token_requests == 0
    assert table_counts(sql) == NOTHING


def test_callback_with_forged_state_redirects_nowhere(flow: Flow, sql) -> None:
    callback = flow.provider.authorize(flow.start(), "alice-sub")
    base, _, _ = callback.partition("&state=")
    forged = f"{base}&state={secrets.token_urlsafe(32)}"
    _assert_refused_without_redirect(flow.callback(forged))
    assert flow.provider.token_requests == 0
    assert table_counts(sql) == NOTHING
    # The genuine state was not burnt by the forgery.
    assert sql("SELECT count(*) FROM oauth_states") == [(1,)]


def test_reused_state_is_refused(flow: Flow, sql) -> None:
    callback = flow.provider.authorize(flow.start(), "alice-sub")
    assert "code" in redirect_query(flow.callback(callback), APP_CALLBACK)
    before = table_counts(sql)
    _assert_refused_without_redirect(flow.callback(callback))
    assert table_counts(sql) == before
    assert flow.provider.token_requests == 1


def test_expired_state_is_refused(flow: Flow, sql) -> None:
    callback = flow.provider.authorize(flow.start(), "alice-sub")
    sql("UPDATE oauth_states SET expires_at = now() - interval '1 second'")
    _assert_refused_without_redirect(flow.callback(callback))
    assert flow.provider.token_requests == 0
    assert table_counts(sql) == NOTHING


def test_callback_opened_in_another_browser_redirects_nowhere(flow: Flow, sql) -> None:
    """Login CSRF: someone sends their own callback URL to a victim whose app is waiting."""
    callback = flow.provider.authorize(flow.start(), "alice-sub")
    flow.client.cookies.clear()  # the victim's browser never opened the start URL
    response = flow.callback(callback)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "browser_mismatch"
    assert "location" not in response.headers
    assert flow.provider.token_requests == 0
    assert table_counts(sql) == NOTHING


def test_callback_with_another_flows_cookie_redirects_nowhere(flow: Flow, sql) -> None:
    flow.start()  # this browser's own, unfinished sign-in
    other_callback = flow.provider.authorize(flow.start(), "alice-sub")
    other_cookie = browser_cookie_name(redirect_query_from(other_callback)["state"])
    assert len(flow.client.cookies) == 2
    flow.client.cookies.delete(other_cookie)
    response = flow.callback(other_callback)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "browser_mismatch"
    assert table_counts(sql) == NOTHING


def test_start_sets_a_narrow_browser_binding_cookie(client: TestClient) -> None:
    response = client.get(
        "/v1/auth/oauth/google/start",
        params={"redirect_uri": APP_CALLBACK},
        follow_redirects=False,
    )
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("papyrus_oauth_")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path", "samesite"} <= attributes
    assert "Path=/v1/auth/oauth/google/callback" in cookie
    assert "SameSite=lax" in cookie and "Max-Age=600" in cookie


def test_concurrent_callbacks_with_one_state_mint_one_code(
    provider: OpenIdProvider, tmp_path: Path, database_url: str, sql
) -> None:
    with live_flow(provider, tmp_path, database_url) as flow:
        callback = provider.authorize(flow.start(), "alice-sub")
        responses = run_together(8, lambda: flow.callback(callback))
    redirects = [r for r in responses if r.status_code == 302]
    assert len(redirects) == 1
    assert all(r.status_code == 400 for r in responses if r not in redirects)
    assert provider.token_requests == 1
    assert sql("SELECT count(*) FROM oauth_codes") == [(1,)]


# --- text PostgreSQL cannot store ---------------------------------------------------------------

# In a JSON body: NUL, and an unpaired surrogate as the JSON escape \ud800 (valid JSON).
_UNSTORABLE_JSON = {"nul": "nul\\u0000here", "lone-surrogate": "\\ud800"}
# In a query string: NUL, and the UTF-8 bytes of a surrogate.
_UNSTORABLE_QUERY = {"nul": "nul%00here", "lone-surrogate": "%ED%A0%80"}


@pytest.mark.parametrize("bad", _UNSTORABLE_JSON.values(), ids=list(_UNSTORABLE_JSON))
@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("redirect_uri", {}),
        ("code_challenge", {"redirect_uri": APP_CALLBACK, "code_challenge_method": "S256"}),
        ("code_challenge_method", {"redirect_uri": APP_CALLBACK, "code_challenge": _CHALLENGE}),
    ],
)
def test_link_start_refuses_unstorable_text(
    client: TestClient, sql, field: str, body: dict[str, str], bad: str
) -> None:
    """A JSON body: 422 `validation_error` naming the field, before any check or storage."""
    token = register(client)["access_token"]
    raw = json.dumps({**body, field: "@@BAD@@"}).replace('"@@BAD@@"', f'"{bad}"')
    response = client.post(
        "/v1/auth/link/google/start",
        content=raw.encode(),
        headers={**bearer(token), "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["loc"] for d in error["details"]] == [["body", field]]
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]


@pytest.mark.parametrize("bad", _UNSTORABLE_QUERY.values(), ids=list(_UNSTORABLE_QUERY))
@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("redirect_uri={bad}", "invalid_redirect_uri"),
        (
            f"redirect_uri={_CALLBACK_Q}&code_challenge={{bad}}&code_challenge_method=S256",
            "invalid_code_challenge",
        ),
        (
            f"redirect_uri={_CALLBACK_Q}&code_challenge={_CHALLENGE}&code_challenge_method={{bad}}",
            "unsupported_code_challenge_method",
        ),
    ],
    ids=["redirect_uri", "code_challenge", "code_challenge_method"],
)
def test_browser_start_refuses_unstorable_text(
    client: TestClient, sql, query: str, code: str, bad: str
) -> None:
    """Query parameters of a browser route: its usual 400, nothing stored."""
    response = client.get(
        f"/v1/auth/oauth/google/start?{query.format(bad=bad)}", follow_redirects=False
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert "location" not in response.headers
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]


@pytest.mark.parametrize("bad", _UNSTORABLE_QUERY.values(), ids=list(_UNSTORABLE_QUERY))
def test_callback_refuses_unstorable_state(flow: Flow, sql, bad: str) -> None:
    flow.start()  # a genuine flow, which the bad state must not touch
    response = flow.client.get(
        f"/v1/auth/oauth/google/callback?code=abc&state={bad}", follow_redirects=False
    )
    _assert_refused_without_redirect(response)
    assert flow.provider.token_requests == 0
    assert table_counts(sql) == NOTHING
    assert sql("SELECT count(*) FROM oauth_states") == [(1,)]


# --- provider answers ---------------------------------------------------------------------------


def test_access_denied_goes_back_to_app_with_error(flow: Flow, sql) -> None:
    response = flow.callback(flow.provider.deny(flow.start()))
    assert response.status_code == 302
    assert redirect_query(response, APP_CALLBACK) == {"error": "access_denied"}
    assert flow.provider.token_requests == 0
    assert table_counts(sql) == NOTHING
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]  # consumed


def test_error_without_state_redirects_nowhere(flow: Flow, sql) -> None:
    flow.provider.state_on_errors = False
    _assert_refused_without_redirect(flow.callback(flow.provider.deny(flow.start())))
    assert table_counts(sql) == NOTHING


def test_callback_without_code_goes_back_with_error(flow: Flow, sql) -> None:
    callback = flow.provider.authorize(flow.start(), "alice-sub")
    response = flow.callback(callback.replace("code=", "nocode="))
    assert redirect_query(response, APP_CALLBACK) == {"error": "invalid_request"}
    assert table_counts(sql) == NOTHING


def test_mismatched_iss_parameter_is_refused(flow: Flow, sql) -> None:
    callback = flow.provider.authorize(flow.start(), "alice-sub")
    response = flow.callback(callback + "&iss=https%3A%2F%2Fevil.example")
    assert redirect_query(response, APP_CALLBACK) == {"error": "invalid_issuer"}
    assert flow.provider.token_requests == 0
    assert table_counts(sql) == NOTHING


def test_provider_authorization_code_cannot_be_replayed(flow: Flow, sql) -> None:
    """A fresh state with someone else's provider code fails at the token endpoint (PKCE)."""
    callback = flow.provider.authorize(flow.start(), "alice-sub")
    stolen_code = redirect_query_from(callback)["code"]
    own = flow.provider.authorize(flow.start(), "alice-sub")
    own_state = redirect_query_from(own)["state"]
    spliced = f"{flow.base_url}/v1/auth/oauth/google/callback?code={stolen_code}&state={own_state}"
    response = flow.callback(spliced)
    assert redirect_query(response, APP_CALLBACK) == {"error": "token_exchange_failed"}
    assert table_counts(sql) == NOTHING


def _wrong_audience(header: dict[str, Any], claims: dict[str, Any]) -> None:
    # `azp` still names us, so only the audience check can catch it.
    claims["azp"] = claims["aud"][0]
    claims["aud"] = ["another-client"]


def _wrong_nonce(header: dict[str, Any], claims: dict[str, Any]) -> None:
    claims["nonce"] = secrets.token_urlsafe(32)


def _no_nonce(header: dict[str, Any], claims: dict[str, Any]) -> None:
    del claims["nonce"]


def _expired(header: dict[str, Any], claims: dict[str, Any]) -> None:
    now = int(time.time())
    claims["iat"], claims["exp"] = now - 7200, now - 3600


def _wrong_issuer(header: dict[str, Any], claims: dict[str, Any]) -> None:
    claims["iss"] = "https://accounts.google.com"


@pytest.mark.parametrize(
    "tamper",
    [_wrong_audience, _wrong_nonce, _no_nonce, _expired, _wrong_issuer],
    ids=["wrong-audience", "wrong-nonce", "no-nonce", "expired", "wrong-issuer"],
)
def test_tampered_id_token_signed_by_provider_is_refused(flow: Flow, sql, tamper) -> None:
    flow.provider.tamper = tamper
    query = flow.app_redirect(flow.start())
    assert query == {"error": "invalid_id_token"}
    assert flow.provider.token_requests == 1
    assert table_counts(sql) == NOTHING


def test_id_token_with_bad_signature_is_refused(flow: Flow, sql) -> None:
    flow.provider.sign_with_unpublished_key = True
    assert flow.app_redirect(flow.start()) == {"error": "invalid_id_token"}
    assert table_counts(sql) == NOTHING


def test_hostile_id_token_cannot_link_to_existing_account(flow: Flow, sql) -> None:
    from tests.conftest import register

    register(flow.client, email="alice@example.com")
    flow.provider.sign_with_unpublished_key = True
    assert flow.app_redirect(flow.start()) == {"error": "invalid_id_token"}
    assert sql("SELECT count(*) FROM oauth_identities") == [(0,)]
    assert sql("SELECT count(*) FROM auth_sessions") == [(1,)]  # only the registration's


def test_tamper_harness_is_honest(flow: Flow) -> None:
    """Re-signing an untouched token with the published key must still pass verification."""
    flow.provider.kid_in_header = True
    code = flow.sign_in_code()
    assert flow.exchange(code).status_code == 200


# --- exchange-code ------------------------------------------------------------------------------


def test_exchange_code_works_once(flow: Flow, sql) -> None:
    code = flow.sign_in_code()
    assert flow.exchange(code).status_code == 200
    again = flow.exchange(code)
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "invalid_code"
    assert sql("SELECT count(*) FROM auth_sessions") == [(1,)]


def test_expired_exchange_code_is_refused(flow: Flow, sql) -> None:
    code = flow.sign_in_code()
    ttl = sql("SELECT expires_at - created_at FROM oauth_codes")[0][0]
    assert 290 <= ttl.total_seconds() <= 310
    sql("UPDATE oauth_codes SET expires_at = now() - interval '1 second'")
    response = flow.exchange(code)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_code"
    assert sql("SELECT count(*) FROM auth_sessions") == [(0,)]


def test_guessed_exchange_code_is_refused(flow: Flow, sql) -> None:
    flow.sign_in_code()
    for guess in (secrets.token_urlsafe(32), "", "a" * 300):
        response = flow.exchange(guess)
        assert response.status_code in (400, 422)
        assert response.json()["error"]["code"] in ("invalid_code", "validation_error")
    assert sql("SELECT count(*) FROM auth_sessions") == [(0,)]
    assert sql("SELECT count(*) FROM oauth_codes WHERE used_at IS NOT NULL") == [(0,)]


def test_exchange_code_error_does_not_echo_the_code(flow: Flow) -> None:
    guess = secrets.token_urlsafe(32)
    assert guess not in flow.exchange(guess).text


def test_concurrent_double_exchange_yields_one_session(
    provider: OpenIdProvider, tmp_path: Path, database_url: str, sql
) -> None:
    with live_flow(provider, tmp_path, database_url) as flow:
        code = flow.sign_in_code()
        responses = run_together(8, lambda: flow.exchange(code))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [400] * 7, statuses
    assert sql("SELECT count(*) FROM auth_sessions") == [(1,)]
    assert sql("SELECT count(*) FROM refresh_tokens") == [(1,)]


# --- helpers ------------------------------------------------------------------------------------


def redirect_query_from(url: str) -> dict[str, str]:
    from urllib.parse import parse_qs, urlsplit

    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@contextmanager
def live_flow(provider: OpenIdProvider, tmp_path: Path, database_url: str) -> Iterator[Flow]:
    """A Flow against the app under a real uvicorn, for real concurrency."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    app = create_app(oauth_settings(tmp_path, database_url, provider, base_url))
    with LiveServer(app, port=port), httpx.Client(base_url=base_url, timeout=30) as http:
        yield Flow(http, provider, base_url)


def run_together(n: int, call) -> list[httpx.Response]:
    """Runs `call` on n threads released at the same instant."""
    barrier = threading.Barrier(n)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        response = call()
        with lock:
            results.append(response)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == n
    return results
