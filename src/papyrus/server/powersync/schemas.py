"""Response models for PowerSync credentials."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class PowerSyncTokenResponse(BaseModel):
    token: str
    expires_in: int


class Jwk(BaseModel):
    kty: Literal["RSA"]
    kid: str
    alg: Literal["RS256"]
    use: Literal["sig"]
    n: str
    e: str


class Jwks(BaseModel):
    keys: list[Jwk]
