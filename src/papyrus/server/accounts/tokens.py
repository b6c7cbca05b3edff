"""Access tokens (short-lived HS256 JWTs) and opaque refresh tokens.

Access tokens carry `type: "access"` and the `papyrus-api` audience, so a PowerSync token (RS256,
another type and audience) can never pass as one.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from papyrus.server.errors import Unauthorized

ACCESS_AUDIENCE = "papyrus-api"
ACCESS_ISSUER = "papyrus"
ACCESS_TYPE = "access"
_ALGORITHM = "HS256"


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID


def create_access_token(
    secret: str, user_id: uuid.UUID, session_id: uuid.UUID, ttl_seconds: int
) -> str:
    now = int(time.time())
    claims = {
        "iss": ACCESS_ISSUER,
        "aud": ACCESS_AUDIENCE,
        "sub": str(user_id),
        "sid": str(session_id),
        "type": ACCESS_TYPE,
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def decode_access_token(secret: str, token: str) -> AccessClaims:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            audience=ACCESS_AUDIENCE,
            issuer=ACCESS_ISSUER,
            options={"require": ["exp", "iat", "sub", "sid", "type"]},
        )
        if claims["type"] != ACCESS_TYPE:
            raise jwt.InvalidTokenError("wrong token type")
        return AccessClaims(uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]))
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The access token has expired.", code="token_expired") from None
    except (jwt.InvalidTokenError, ValueError, KeyError, TypeError):
        raise Unauthorized("The access token is invalid.", code="invalid_token") from None


def new_refresh_token() -> str:
    """256 bits from the OS CSPRNG."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """Tokens are high-entropy, so a plain SHA-256 is enough to make a database leak useless."""
    return hashlib.sha256(token.encode()).digest()
