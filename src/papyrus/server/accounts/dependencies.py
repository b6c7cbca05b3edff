"""FastAPI dependencies: settings, database session, the signed-in caller, rate limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from papyrus.server.accounts import ratelimit, service
from papyrus.server.accounts.models import AuthSession, User
from papyrus.server.config import Settings
from papyrus.server.errors import Unauthorized


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.session_factory


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionFactoryDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_session_factory)]


async def get_db(factory: SessionFactoryDep) -> AsyncIterator[AsyncSession]:
    async with factory() as session:
        yield session


DbDep = Annotated[AsyncSession, Depends(get_db)]

_bearer = HTTPBearer(auto_error=False, description="Papyrus access token")


@dataclass
class Caller:
    user: User
    session: AuthSession


async def get_caller(
    db: DbDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an access token as 'Authorization: Bearer <token>'.")
    user, auth_session = await service.authenticate(db, settings, credentials.credentials)
    return Caller(user, auth_session)


CallerDep = Annotated[Caller, Depends(get_caller)]


def client_ip(request: Request) -> str:
    """The peer address; behind a proxy, uvicorn's --forwarded-allow-ips rewrites it."""
    return request.client.host if request.client else "unknown"


async def limit_auth_ip(
    request: Request, factory: SessionFactoryDep, settings: SettingsDep
) -> None:
    """The per-IP budget shared by every unauthenticated credential endpoint."""
    await ratelimit.hit_ip_limit(
        factory, client_ip(request), settings.RATE_LIMIT_AUTH_IP_PER_MINUTE
    )


AuthRateLimit = Depends(limit_auth_ip)
