"""PowerSync tokens: short-lived RS256 JWTs the PowerSync service verifies against our JWKS.

They carry `type: "powersync"` and the PowerSync audience, and are signed with an RSA key, so they
can never pass as Papyrus access tokens (HS256, `type: "access"`, audience `papyrus-api`); and an
access token never verifies at the sync service (wrong algorithm, no such kid, wrong audience).
"""

from __future__ import annotations

import time
import uuid

import jwt

from papyrus.server.powersync.keys import ALGORITHM, SigningKey

POWERSYNC_TYPE = "powersync"


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
