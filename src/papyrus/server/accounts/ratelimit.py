"""Rate limits kept in PostgreSQL, so they hold across every server process.

Each check runs in its own short transaction: a request that later fails still counts.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from papyrus.server.accounts.models import LoginFailure, RateLimitCounter
from papyrus.server.errors import RateLimited


async def hit_ip_limit(
    factory: async_sessionmaker[AsyncSession], ip: str, per_minute: int, scope: str = "auth"
) -> None:
    """Counts one request from `ip`; raises 429 once the minute's budget is spent."""
    now = datetime.now(UTC)
    window = now.replace(second=0, microsecond=0)
    stmt = (
        insert(RateLimitCounter)
        .values(key=f"{scope}:ip:{ip}", window_start=window, count=1)
        .on_conflict_do_update(
            index_elements=["key", "window_start"],
            set_={"count": RateLimitCounter.count + 1},
        )
        .returning(RateLimitCounter.count)
    )
    async with factory() as session, session.begin():
        count = (await session.execute(stmt)).scalar_one()
        if random.random() < 0.01:  # occasional sweep of old windows
            await session.execute(
                delete(RateLimitCounter).where(
                    RateLimitCounter.window_start < now - timedelta(hours=1)
                )
            )
    if count > per_minute:
        retry_after = 60 - now.second
        raise RateLimited(retry_after)


async def check_login_failures(
    factory: async_sessionmaker[AsyncSession], email: str, limit: int, window_seconds: int
) -> None:
    """Raises 429 while `email` has `limit` failed logins inside the window."""
    since = datetime.now(UTC) - timedelta(seconds=window_seconds)
    async with factory() as session:
        count, oldest = (
            await session.execute(
                select(func.count(), func.min(LoginFailure.failed_at)).where(
                    LoginFailure.email == email, LoginFailure.failed_at > since
                )
            )
        ).one()
    if count >= limit:
        retry_after = (oldest - since).total_seconds()
        raise RateLimited(int(retry_after) + 1, "Too many failed sign-ins; try again later.")


async def record_login_failure(factory: async_sessionmaker[AsyncSession], email: str) -> None:
    async with factory() as session, session.begin():
        session.add(LoginFailure(email=email))
        if random.random() < 0.01:
            await session.execute(
                text("DELETE FROM login_failures WHERE failed_at < now() - interval '1 day'")
            )


async def clear_login_failures(factory: async_sessionmaker[AsyncSession], email: str) -> None:
    async with factory() as session, session.begin():
        await session.execute(delete(LoginFailure).where(LoginFailure.email == email))
