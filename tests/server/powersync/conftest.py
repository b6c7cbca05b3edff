"""Independent verification of PowerSync tokens: joserfc against the JWKS fetched over HTTP.

Nothing here imports the code under test, so a bug there cannot hide itself.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import bearer

TOKEN = "/v1/auth/powersync-token"
JWKS = "/v1/auth/jwks"


def fetch_jwks(client: TestClient) -> dict[str, Any]:
    response = client.get(JWKS)
    assert response.status_code == 200, response.text
    return response.json()


def issue(client: TestClient, access_token: str) -> str:
    response = client.post(TOKEN, headers=bearer(access_token))
    assert response.status_code == 200, response.text
    return response.json()["token"]


def verify(
    token: str, jwks: dict[str, Any], audience: str = "powersync", now: int | None = None
) -> jwt.Token:
    """As the PowerSync service does: key by kid, RS256 only, sub/iat/exp/aud required."""
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    registry = jwt.JWTClaimsRegistry(
        now=now,
        aud={"essential": True, "value": audience},
        sub={"essential": True},
        iat={"essential": True},
        exp={"essential": True},
        type={"essential": True, "value": "powersync"},
    )
    registry.validate(decoded.claims)
    return decoded
