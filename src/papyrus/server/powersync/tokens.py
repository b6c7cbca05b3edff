"""PowerSync tokens: short-lived RS256 JWTs the PowerSync service verifies against our JWKS.

They carry `type: "powersync"` and the PowerSync audience, and are signed with an RSA key, so they
can never pass as Papyrus access tokens (HS256, `type: "access"`, audience `papyrus-api`); and an
access token never verifies here (wrong algorithm, no such kid, wrong audience and type).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from papyrus.server.powersync.keys import ALGORITHM, KeySet, SigningKey

POWERSYNC_TYPE = "powersync"


@dataclass(frozen=True)
class PowerSyncClaims:
    user_id: uuid.UUID
    expires_at: int


class InvalidPowerSyncToken(Exception):
    pass


def create_powersync_token(
    key: SigningKey, user_id: uuid.UUID, audience: str, ttl_seconds: int, now: int | None = None
) -> str:
    issued_at = int(time.time()) if now is None else now
    claims = {
        "sub": str(user_id),
        "aud": audience,
        "type": POWERSYNC_TYPE,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
    }
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


def decode_powersync_token(keys: KeySet, token: str, audience: str) -> PowerSyncClaims:
    """Verifies a token as the PowerSync service would (for in-process checks and dev services)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        matching = [k for k in keys.verification_keys() if k.kid == kid]
        if not matching:
            raise InvalidPowerSyncToken("unknown kid")
        claims = jwt.decode(
            token,
            matching[0].public_key,
            algorithms=[ALGORITHM],
            audience=audience,
            options={"require": ["sub", "iat", "exp", "aud", "type"]},
        )
        if claims["type"] != POWERSYNC_TYPE:
            raise InvalidPowerSyncToken("wrong token type")
        return PowerSyncClaims(uuid.UUID(claims["sub"]), int(claims["exp"]))
    except (jwt.InvalidTokenError, ValueError, KeyError, TypeError) as exc:
        raise InvalidPowerSyncToken(type(exc).__name__) from None
