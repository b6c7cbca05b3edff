"""`POST /v1/auth/powersync-token` and `GET /v1/auth/jwks`, checked with an independent library."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError

from papyrus.devsync.auth import AuthError, KeyStore
from papyrus.server.accounts import tokens as access_tokens
from papyrus.server.app import create_app
from papyrus.server.powersync.keys import load_keyset
from tests.conftest import LiveServer, bearer, make_settings, register
from tests.server.powersync.conftest import JWKS, TOKEN, fetch_jwks, issue, verify


def test_token_claims_and_signature_verify_against_the_published_jwks(
    client: TestClient,
) -> None:
    account = register(client)
    before = int(time.time())
    response = client.post(TOKEN, headers=bearer(account["access_token"]))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expires_in"} and body["expires_in"] == 300
    assert response.headers["cache-control"] == "no-store"

    jwks = fetch_jwks(client)
    [key] = jwks["keys"]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    assert len(base64.urlsafe_b64decode(key["n"] + "==")) * 8 >= 2048
    assert set(key) == {"kty", "kid", "alg", "use", "n", "e"}, "public parts only"

    decoded = verify(body["token"], jwks)
    assert decoded.header == {"alg": "RS256", "kid": key["kid"], "typ": "JWT"}
    claims = decoded.claims
    assert claims["sub"] == account["user"]["id"]
    assert claims["aud"] == "powersync" and claims["type"] == "powersync"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 300


def test_jwks_is_public_and_cacheable(client: TestClient) -> None:
    response = client.get(JWKS)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    assert client.get(JWKS).json() == response.json(), "stable across requests"


def test_lifetime_audience_and_kid_come_from_settings(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        POWERSYNC_TOKEN_TTL_SECONDS=60,
        POWERSYNC_JWT_AUDIENCE="papyrus-sync",
        POWERSYNC_JWT_KEY_ID="key-2026",
    )
    with TestClient(create_app(settings)) as client:
        account = register(client)
        response = client.post(TOKEN, headers=bearer(account["access_token"]))
        assert response.json()["expires_in"] == 60
        jwks = fetch_jwks(client)
        assert [k["kid"] for k in jwks["keys"]] == ["key-2026"]
        claims = verify(response.json()["token"], jwks, audience="papyrus-sync").claims
        assert claims["exp"] - claims["iat"] == 60
        with pytest.raises(JoseError):
            verify(response.json()["token"], jwks, audience="powersync")


def test_a_token_is_refused_after_it_expires(client: TestClient) -> None:
    token = issue(client, register(client)["access_token"])
    jwks = fetch_jwks(client)
    exp = verify(token, jwks).claims["exp"]
    with pytest.raises(JoseError):
        verify(token, jwks, now=exp + 1)


def test_missing_expired_or_revoked_access_tokens_get_401(client: TestClient, settings) -> None:
    account = register(client)
    assert client.post(TOKEN).status_code == 401
    assert client.post(TOKEN, headers=bearer("garbage")).status_code == 401

    claims = access_tokens.decode_access_token(
        settings.access_token_secret, account["access_token"]
    )
    expired = access_tokens.create_access_token(
        settings.access_token_secret, claims.user_id, claims.session_id, ttl_seconds=-60
    )
    response = client.post(TOKEN, headers=bearer(expired))
    assert response.status_code == 401 and response.json()["error"]["code"] == "token_expired"

    assert (
        client.post("/v1/auth/logout", headers=bearer(account["access_token"])).status_code == 204
    )
    response = client.post(TOKEN, headers=bearer(account["access_token"]))
    assert response.status_code == 401 and response.json()["error"]["code"] == "session_revoked"


def test_a_powersync_token_is_never_an_access_token(client: TestClient) -> None:
    powersync_token = issue(client, register(client)["access_token"])
    for method, path in [
        ("GET", "/v1/users/me"),
        ("POST", TOKEN),
        ("GET", "/v1/sync/rejections"),
    ]:
        response = client.request(method, path, headers=bearer(powersync_token))
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "invalid_token"
    upload = client.post(
        "/v1/sync/powersync-upload", json={"batch": []}, headers=bearer(powersync_token)
    )
    assert upload.status_code == 401


def test_an_access_token_is_never_a_powersync_token(app, client: TestClient, settings) -> None:
    """The sync service (here the development one, which checks what PowerSync checks) refuses
    Papyrus access tokens and tokens for another audience, and accepts what Papyrus issues."""
    account = register(client)
    jwks = fetch_jwks(client)
    with pytest.raises(JoseError):  # HS256, no kid, another audience and type
        verify(account["access_token"], jwks)

    keys = load_keyset(settings)
    now = int(time.time())
    wrong_audience = jose_jwt.encode(
        {"alg": "RS256", "kid": keys.current.kid},
        {"sub": "u", "aud": "papyrus-api", "iat": now, "exp": now + 60},
        _jose_private_key(keys.current.private_key),
    )
    with LiveServer(app) as server:
        store = KeyStore(f"{server.url}{JWKS}", [settings.POWERSYNC_JWT_AUDIENCE])
        for token, code in (
            (account["access_token"], "PSYNC_S2101"),
            (wrong_audience, "PSYNC_S2105"),
        ):
            with pytest.raises(AuthError) as excinfo:
                asyncio.run(store.verify(token))
            assert excinfo.value.code == code
        issued = issue(client, account["access_token"])
        assert asyncio.run(store.verify(issued)).user_id == account["user"]["id"]


def _jose_private_key(private_key):
    from cryptography.hazmat.primitives import serialization
    from joserfc.jwk import RSAKey

    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return RSAKey.import_key(pem)
