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
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from papyrus.server.accounts import ratelimit, service
from papyrus.server.config import Settings
from papyrus.server.errors import Unauthorized


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.session_factory


def get_engine(request: Request) -> AsyncEngine:
    """Autocommit connections for the hot paths: one statement, one round trip."""
    return request.app.state.autocommit_engine


def get_limits_engine(request: Request) -> AsyncEngine:
    return request.app.state.limits_engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionFactoryDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_session_factory)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
LimitsEngineDep = Annotated[AsyncEngine, Depends(get_limits_engine)]


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
    engine: EngineDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an access token as 'Authorization: Bearer <token>'.")
    user_id, session_id = await service.authenticate(engine, settings, credentials.credentials)
    return Caller(user_id, session_id)


CallerDep = Annotated[Caller, Depends(get_caller)]


def client_ip(request: Request) -> str:
    """The peer address. Forwarding headers have rewritten it only if the peer is a trusted
    proxy (FORWARDED_ALLOW_IPS); otherwise it is the TCP peer, whatever headers say."""
    return request.client.host if request.client else "unknown"


async def limit_auth_ip(request: Request, limits: LimitsEngineDep, settings: SettingsDep) -> None:
    """The per-IP budget shared by every unauthenticated credential endpoint."""
    await ratelimit.hit_ip_limit(limits, client_ip(request), settings.RATE_LIMIT_AUTH_IP_PER_MINUTE)


AuthRateLimit = Depends(limit_auth_ip)
