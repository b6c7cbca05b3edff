"""JWT verification against the API's JWKS, answering failures as the PowerSync service does.

Checks mirror the service's KeyStore: the token's `kid` selects the key (keys without a kid
are tried by signature), the algorithm must fit the key, `sub`, `iat` and `exp` are required
(60 s clock tolerance), `aud` must be one of the configured audiences, and `exp - iat` may not
exceed the maximum lifetime. The JWKS is cached and fetched again when a token names a kid we
do not know, so key rotation on the API side needs no restart here.

Every failure is an `AuthError` with the service's code (PSYNC_S2101 generic, S2103 expired,
S2104 lifetime too long, S2105 audience, S2106 no token, S2204 JWKS fetch failed) and HTTP 401;
that status is what makes SDKs drop their cached token and fetch a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

log = logging.getLogger(__name__)

_HEADER_RE = re.compile(r"^(Token|Bearer) (\S+)$")
_FAMILIES = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}
_LEEWAY = 60


class AuthError(Exception):
    """An authorization failure in the service's error shape."""

    def __init__(self, code: str, description: str, status: int = 401) -> None:
        super().__init__(f"[{code}] {description}")
        self.code = code
        self.description = description
        self.status = status

    def to_json(self) -> dict[str, Any]:
        return {
            "error": {
                "name": "AuthorizationError",
                "code": self.code,
                "status": self.status,
                "description": self.description,
            }
        }


@dataclass(frozen=True)
class TokenPayload:
    """The verified claims a sync request needs."""

    user_id: str
    exp: float
    claims: dict[str, Any]

    def expires_in(self, now: float | None = None) -> int:
        """Seconds until expiry, rounded up and never negative (`token_expires_in`)."""
        return max(0, math.ceil(self.exp - (time.time() if now is None else now)))


def token_from_header(header: str | None) -> str:
    match = _HEADER_RE.match(header or "")
    if match is None:
        raise AuthError("PSYNC_S2106", "Authentication required")
    return match.group(2)


@dataclass(frozen=True)
class _Key:
    kid: str | None
    kty: str
    alg: str | None
    key: Any

    def matches(self, alg: str) -> bool:
        if self.alg is not None:
            return self.alg == alg
        return alg.startswith(_FAMILIES.get(self.kty, ()))


class KeyStore:
    """Keys from a JWKS URI, cached; refreshed on an unknown kid (at most every few seconds)."""

    def __init__(
        self,
        jwks_uri: str,
        audiences: list[str],
        *,
        max_lifetime: int = 86400,
        cache_seconds: float = 300.0,
        min_refetch_seconds: float = 5.0,
    ) -> None:
        self.jwks_uri = jwks_uri
        self.audiences = audiences
        self.max_lifetime = max_lifetime
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self._keys: list[_Key] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> TokenPayload:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise AuthError(
                "PSYNC_S2101", "Token is not a well-formed JWT. Check the token format."
            ) from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg == "none" or alg.startswith("HS"):
            raise AuthError("PSYNC_S2101", f"Unexpected token algorithm {alg}")
        key = await self._key_for(header.get("kid"), alg, token)
        claims = self._decode(token, key, alg)
        self._check_claims(claims)
        return TokenPayload(str(claims["sub"]), float(claims["exp"]), claims)

    async def _key_for(self, kid: Any, alg: str, token: str) -> _Key:
        for attempt in range(2):
            keys = await self._get_keys(force=attempt == 1)
            if kid:
                for key in keys:
                    if key.kid == kid:
                        if not key.matches(alg):
                            raise AuthError("PSYNC_S2101", f"Unexpected token algorithm {alg}")
                        return key
            for key in keys:
                if key.kid is None and key.matches(alg) and _signature_ok(token, key, alg):
                    return key
        raise AuthError(
            "PSYNC_S2101",
            "Could not find an appropriate key in the keystore. The key is missing or no key"
            " matched the token KID",
        )

    async def _get_keys(self, *, force: bool) -> list[_Key]:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = self._keys is None or age > self.cache_seconds
            if force and age >= self.min_refetch_seconds:
                stale = True
            if stale:
                self._keys = await self._fetch()
                self._fetched_at = time.monotonic()
            assert self._keys is not None
            return self._keys

    async def _fetch(self) -> list[_Key]:
        try:
            async with httpx.AsyncClient(timeout=30.0) as client:
                response = await client.get(self.jwks_uri, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            if self._keys is not None:
                log.warning("JWKS refresh from %s failed: %s", self.jwks_uri, exc)
                return self._keys
            raise AuthError("PSYNC_S2204", f"JWKS request failed: {exc}") from exc
        keys = []
        for jwk in document.get("keys", []) if isinstance(document, dict) else []:
            if jwk.get("use") not in (None, "sig"):
                continue
            try:
                parsed = jwt.PyJWK(jwk)
            except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
                log.warning("ignoring JWK %s: %s", jwk.get("kid"), exc)
                continue
            keys.append(_Key(jwk.get("kid"), jwk.get("kty", ""), jwk.get("alg"), parsed.key))
        return keys

    def _decode(self, token: str, key: _Key, alg: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                leeway=_LEEWAY,
                options={"require": ["sub", "iat", "exp"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("PSYNC_S2103", "JWT has expired") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(
                "PSYNC_S2101", f'JWT payload is missing a required claim "{exc.claim}"'
            ) from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("PSYNC_S2101", "signature verification failed") from exc
        except jwt.DecodeError as exc:
            raise AuthError(
                "PSYNC_S2101", "Token is not a well-formed JWT. Check the token format."
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("PSYNC_S2101", str(exc)) from exc

    def _check_claims(self, claims: dict[str, Any]) -> None:
        aud = claims.get("aud")
        if aud is None:
            raise AuthError("PSYNC_S2105", 'JWT payload is missing a required claim "aud"')
        values = aud if isinstance(aud, list) else [aud]
        if not any(a in self.audiences for a in values):
            raise AuthError("PSYNC_S2105", f'Unexpected "aud" claim value: {json.dumps(aud)}')
        duration = float(claims["exp"]) - float(claims["iat"])
        if duration > self.max_lifetime:
            raise AuthError(
                "PSYNC_S2104",
                f"Token must expire in a maximum of {self.max_lifetime} seconds, got {duration:g}s",
            )
        parameters = claims.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise AuthError("PSYNC_S2101", "Payload parameters must be an object")


def _signature_ok(token: str, key: _Key, alg: str) -> bool:
    try:
        jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_aud": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidSignatureError:
        return False
    except jwt.InvalidTokenError:
        return True  # signature fine; claim problems are reported by the real decode
    return True
