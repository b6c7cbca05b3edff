"""FastAPI dependencies: settings, database session, the signed-in caller, rate limits.

Request bodies have been read in full before any of these run (`middleware.BodyLimit`), and the
database session closes before the response is sent, so no request holds a connection while it
waits on the network.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from papyrus.server.accounts import ratelimit, service
from papyrus.server.config import Settings
from papyrus.server.errors import Unauthorized
from papyrus.server.hotdb import Pool


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = request.app.state.session_factory
    return factory


async def get_limits_pool(request: Request) -> Pool:
    """Autocommit connections for rate-limit counting (`hotdb`)."""
    pool: Pool = request.app.state.hot_pools.limits
    return pool


# Dependencies are `async def` even when they do not await: FastAPI runs plain functions in a
# worker thread, a hand-off that costs more than these lookups.
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionFactoryDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_session_factory)]
LimitsPoolDep = Annotated[Pool, Depends(get_limits_pool)]


async def get_db(factory: SessionFactoryDep) -> AsyncIterator[AsyncSession]:
    async with factory() as session:
        yield session


# scope="function": closed when the route returns, before the response goes out.
DbDep = Annotated[AsyncSession, Depends(get_db, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="Papyrus access token")


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID
    session_id: uuid.UUID


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an access token as 'Authorization: Bearer <token>'.")
    # Read from app state rather than through sub-dependencies: this runs on every
    # authenticated request, and each dependency FastAPI resolves costs time.
    state = request.app.state
    user_id, session_id = await service.authenticate(
        state.hot_pools.main, state.settings, credentials.credentials
    )
    return Caller(user_id, session_id)


CallerDep = Annotated[Caller, Depends(get_caller)]


def client_ip(request: Request) -> str:
    """The peer address. Forwarding headers have rewritten it only if the peer is a trusted
    proxy (FORWARDED_ALLOW_IPS); otherwise it is the TCP peer, whatever headers say."""
    return request.client.host if request.client else "unknown"


async def limit_auth_ip(request: Request) -> None:
    """The per-IP budget shared by every unauthenticated credential endpoint."""
    state = request.app.state  # directly, as in `get_caller`
    await ratelimit.hit_ip_limit(
        state.hot_pools.limits, client_ip(request), state.settings.RATE_LIMIT_AUTH_IP_PER_MINUTE
    )


AuthRateLimit = Depends(limit_auth_ip)
