"""A real OpenID provider on loopback (oidc-provider-mock) standing in for Google.

The provider is the package's Flask app served by werkzeug in a thread, with client
registration and nonces required. Hooks on that app add what Google does and the package
does not (PKCE S256 enforcement, `state` on error redirects, `kid` in ID-token headers on
request) and, for hostile tests,
rewrite the ID token it issues: re-signed with the provider's own published key (wrong
audience, nonce, expiry) or with a key it never published (bad signature).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import flask
import httpx
import pytest
import werkzeug.serving
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from papyrus.server.config import Settings
from tests.conftest import make_settings

with warnings.catch_warnings():
    # Authlib turns its deprecation notices on for good, over pytest's filters; this one is
    # about the test-only provider's own `authlib.jose` import.
    warnings.simplefilter("ignore", DeprecationWarning)
    import oidc_provider_mock

APP_CALLBACK = "http://127.0.0.1:43821/auth/callback"
TEST_BASE_URL = "http://testserver"

Tamper = Callable[[dict[str, Any], dict[str, Any]], None]


def _b64url_json(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class OpenIdProvider:
    def __init__(self) -> None:
        self.app = oidc_provider_mock.app(require_client_registration=True, require_nonce=True)
        self.app.before_request(self._before)
        self.app.after_request(self._after)
        self.server = werkzeug.serving.make_server("127.0.0.1", 0, self.app, threaded=True)
        self.issuer = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        # Knobs for hostile tests.
        self.tamper: Tamper | None = None
        self.sign_with_unpublished_key = False
        self.kid_in_header = False
        self.state_on_errors = True
        # What the provider saw.
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.token_requests = 0
        self._challenges: dict[str, tuple[str | None, str | None]] = {}
        self._storage: Any = None

    def __enter__(self) -> OpenIdProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # --- setup through the provider's own HTTP API ---

    def register_client(self, redirect_uri: str) -> tuple[str, str]:
        response = httpx.post(
            f"{self.issuer}/oauth2/clients",
            json={
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "client_secret_basic",
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return body["client_id"], body["client_secret"]

    def set_user(self, sub: str, **claims: Any) -> None:
        response = httpx.put(f"{self.issuer}/users/{sub}", json=claims)
        assert response.status_code == 204, response.text

    def authorize(self, authorization_url: str, sub: str) -> str:
        """What the user's click on the provider's page does; returns the callback URL."""
        response = httpx.post(authorization_url, data={"sub": sub})
        assert response.status_code == 302, response.text
        return response.headers["location"]

    def deny(self, authorization_url: str) -> str:
        response = httpx.post(authorization_url, data={"action": "deny"})
        assert response.status_code == 302, response.text
        return response.headers["location"]

    def rotate_key(self) -> None:
        """Replaces the signing key, as providers do; the JWKS then only lists the new one."""
        from authlib.jose import RSAKey as AuthlibRSAKey  # the key type the package signs with

        assert self._storage is not None, "rotate after the provider served a request"
        self._storage.jwk = AuthlibRSAKey.generate_key(is_private=True)

    # --- hooks ---

    def _before(self) -> flask.typing.ResponseReturnValue | None:
        self._storage = flask.g.oidc_provider_mock_storage
        request = flask.request
        if request.path == "/jwks":
            self.jwks_fetches += 1
        if request.path == "/.well-known/openid-configuration":
            self.discovery_fetches += 1
        if request.path == "/oauth2/authorize" and request.method == "POST":
            flask.g.pkce = (
                request.args.get("code_challenge"),
                request.args.get("code_challenge_method"),
            )
        if (
            request.path == "/oauth2/token"
            and request.form.get("grant_type") == "authorization_code"
        ):
            self.token_requests += 1
            challenge, method = self._challenges.pop(request.form.get("code", ""), (None, None))
            verifier = request.form.get("code_verifier") or ""
            if method != "S256" or not challenge or _s256(verifier) != challenge:
                return flask.jsonify(error="invalid_grant", error_description="PKCE failed"), 400
        return None

    def _after(self, response: flask.Response) -> flask.Response:
        request = flask.request
        if request.path == "/oauth2/authorize" and response.status_code == 302:
            location = response.headers["Location"]
            query = parse_qs(urlsplit(location).query)
            if "code" in query:
                self._challenges[query["code"][0]] = flask.g.pkce
            if "error" in query and "state" not in query and self.state_on_errors:
                # RFC 6749 4.1.2.1 (and Google): error responses carry the state back too.
                response.headers["Location"] = (
                    f"{location}&{urlencode({'state': request.args['state']})}"
                )
        resign = self.tamper or self.sign_with_unpublished_key or self.kid_in_header
        if request.path == "/oauth2/token" and response.status_code == 200 and resign:
            body = response.get_json()
            body["id_token"] = self._resign(body["id_token"])
            response.set_data(json.dumps(body))
        return response

    def _resign(self, id_token: str) -> str:
        header_segment, claims_segment, _ = id_token.split(".")
        header, claims = _b64url_json(header_segment), _b64url_json(claims_segment)
        published = RSAKey.import_key(self._storage.jwk.as_dict(is_private=True))
        header["kid"] = published.kid
        if self.tamper:
            self.tamper(header, claims)
        key = published
        if self.sign_with_unpublished_key:
            key = RSAKey.generate_key(2048, parameters={"kid": published.kid})
        return jwt.encode(header, claims, key)


@pytest.fixture
def provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        running.set_user(
            "alice-sub", email="alice@example.com", email_verified=True, name="Alice Liddell"
        )
        yield running


def oauth_settings(
    tmp_path: Path, database_url: str, provider: OpenIdProvider, base_url: str, **overrides: Any
) -> Settings:
    callback = f"{base_url}/v1/auth/oauth/google/callback"
    client_id, client_secret = provider.register_client(callback)
    values: dict[str, Any] = {
        "PUBLIC_BASE_URL": base_url,
        "GOOGLE_OAUTH_ISSUER": provider.issuer,
        "GOOGLE_OAUTH_CLIENT_ID": client_id,
        "GOOGLE_OAUTH_CLIENT_SECRET": client_secret,
        "OAUTH_WEB_ORIGINS": ["https://read.example.com"],
    }
    values.update(overrides)
    return make_settings(tmp_path, database_url, **values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, provider: OpenIdProvider) -> Settings:
    """Overrides the root fixture: the app signs in with the loopback provider."""
    return oauth_settings(tmp_path, database_url, provider, TEST_BASE_URL)


class Flow:
    """Drives the browser's part of the flow with plain HTTP against app and provider."""

    def __init__(
        self, client: TestClient | httpx.Client, provider: OpenIdProvider, base_url: str
    ) -> None:
        self.client = client
        self.provider = provider
        self.base_url = base_url

    def start(self, redirect_uri: str = APP_CALLBACK, **params: str) -> str:
        """`params` adds query parameters, e.g. the app's `code_challenge` (see `pkce`)."""
        response = self.client.get(
            "/v1/auth/oauth/google/start",
            params={"redirect_uri": redirect_uri, **params},
            follow_redirects=False,
        )
        assert response.status_code == 302, response.text
        location = response.headers["location"]
        assert location.startswith(f"{self.provider.issuer}/oauth2/authorize?")
        return location

    def callback(self, callback_url: str, **headers: str) -> httpx.Response:
        assert callback_url.startswith(f"{self.base_url}/v1/auth/oauth/google/callback?")
        return self.client.get(callback_url, follow_redirects=False, headers=headers)

    def app_redirect(self, authorization_url: str, sub: str = "alice-sub") -> dict[str, str]:
        """Provider page -> callback; returns the query the app callback receives."""
        response = self.callback(self.provider.authorize(authorization_url, sub))
        assert response.status_code == 302, response.text
        return redirect_query(response, APP_CALLBACK)

    def sign_in_code(
        self, sub: str = "alice-sub", redirect_uri: str = APP_CALLBACK, **params: str
    ) -> str:
        response = self.callback(self.provider.authorize(self.start(redirect_uri, **params), sub))
        assert response.status_code == 302, response.text
        query = redirect_query(response, redirect_uri)
        assert "code" in query, query
        return query["code"]

    def exchange(self, code: str, **extra: Any) -> httpx.Response:
        return self.client.post(
            "/v1/auth/exchange-code", json={"code": code, "client_type": "desktop", **extra}
        )


def pkce() -> tuple[str, dict[str, str]]:
    """An app's PKCE pair: the verifier it keeps, and the start parameters carrying its S256."""
    verifier = secrets.token_urlsafe(48)
    return verifier, {"code_challenge": _s256(verifier), "code_challenge_method": "S256"}


def redirect_query(response: httpx.Response, redirect_uri: str) -> dict[str, str]:
    """The query of a redirect to exactly `redirect_uri`."""
    location = response.headers["location"]
    base, _, query = location.partition("?")
    assert base == redirect_uri, location
    return {key: values[0] for key, values in parse_qs(query).items()}


@pytest.fixture
def flow(client: TestClient, provider: OpenIdProvider) -> Flow:
    return Flow(client, provider, TEST_BASE_URL)


def unique_email() -> str:
    return f"reader-{uuid.uuid4().hex[:8]}@example.com"
