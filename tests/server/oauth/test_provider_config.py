"""Provider configuration: missing credentials, discovery/JWKS caching, key rotation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from papyrus.server.app import create_app
from papyrus.server.oauth.service import allowed_redirect_uris
from tests.conftest import bearer, free_port, make_settings, register
from tests.server.oauth.conftest import APP_CALLBACK, Flow, OpenIdProvider


@pytest.fixture
def unconfigured(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, database_url, GOOGLE_OAUTH_CLIENT_SECRET="")
    with TestClient(create_app(settings)) as client:
        yield client


def test_start_answers_503_when_client_is_not_configured(unconfigured: TestClient, sql) -> None:
    response = unconfigured.get(
        "/v1/auth/oauth/google/start",
        params={"redirect_uri": APP_CALLBACK},
        follow_redirects=False,
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "oauth_not_configured"
    assert "GOOGLE_OAUTH_CLIENT_ID" in error["message"]
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]


def test_link_start_answers_503_when_client_is_not_configured(unconfigured: TestClient) -> None:
    me = register(unconfigured)
    response = unconfigured.post(
        "/v1/auth/link/google/start",
        json={"redirect_uri": APP_CALLBACK},
        headers=bearer(me["access_token"]),
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "oauth_not_configured"


def test_unreachable_provider_is_a_503_and_stores_nothing(
    tmp_path: Path, database_url: str, sql
) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        GOOGLE_OAUTH_ISSUER=f"http://127.0.0.1:{free_port()}",
        GOOGLE_OAUTH_CLIENT_ID="id",
        GOOGLE_OAUTH_CLIENT_SECRET="secret",
    )
    with TestClient(create_app(settings)) as client:
        response = client.get(
            "/v1/auth/oauth/google/start",
            params={"redirect_uri": APP_CALLBACK},
            follow_redirects=False,
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert "secret" not in response.text
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]


def test_plain_http_issuer_off_loopback_is_refused(
    tmp_path: Path, database_url: str, sql, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        GOOGLE_OAUTH_ISSUER="http://accounts.example.com",
        GOOGLE_OAUTH_CLIENT_ID="id",
        GOOGLE_OAUTH_CLIENT_SECRET="secret",
    )
    with TestClient(create_app(settings)) as client:
        response = client.get(
            "/v1/auth/oauth/google/start",
            params={"redirect_uri": APP_CALLBACK},
            follow_redirects=False,
        )
    assert response.status_code == 503
    assert "issuer must use https" in caplog.text
    assert sql("SELECT count(*) FROM oauth_states") == [(0,)]


def test_discovery_and_jwks_are_cached(flow: Flow, provider: OpenIdProvider) -> None:
    for _ in range(3):
        assert flow.exchange(flow.sign_in_code()).status_code == 200
    assert provider.discovery_fetches == 1
    assert provider.jwks_fetches == 1


def test_key_rotation_refetches_jwks_for_unknown_kid(flow: Flow, provider: OpenIdProvider) -> None:
    provider.kid_in_header = True
    assert flow.exchange(flow.sign_in_code()).status_code == 200
    assert provider.jwks_fetches == 1
    provider.rotate_key()
    assert flow.exchange(flow.sign_in_code()).status_code == 200
    assert provider.jwks_fetches == 2


def test_allowlist_is_configurable(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        OAUTH_APP_REDIRECT_URIS="papyrus-beta://auth/callback",
        OAUTH_WEB_ORIGINS="https://read.example.com/, http://localhost:5173",
    )
    assert allowed_redirect_uris(settings) == {
        "papyrus-beta://auth/callback",
        "https://read.example.com/auth/callback",
        "http://localhost:5173/auth/callback",
    }


def test_default_allowlist(tmp_path: Path, database_url: str) -> None:
    assert allowed_redirect_uris(make_settings(tmp_path, database_url)) == {
        "papyrus://auth/callback",
        "http://localhost:43821/auth/callback",
        "http://127.0.0.1:43821/auth/callback",
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OAUTH_APP_REDIRECT_URIS", "papyrus://auth/callback?x=1"),
        ("OAUTH_APP_REDIRECT_URIS", "/auth/callback"),
        ("OAUTH_WEB_ORIGINS", "https://read.example.com/app"),
        ("OAUTH_WEB_ORIGINS", "javascript:alert(1)"),
    ],
)
def test_malformed_allowlist_settings_fail_at_startup(
    tmp_path: Path, database_url: str, name: str, value: str
) -> None:
    with pytest.raises(ValueError):
        make_settings(tmp_path, database_url, **{name: value})
