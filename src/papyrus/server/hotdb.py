"""Plain psycopg connection pools for the statements every request runs.

Checking an access token, rotating a refresh token and counting a rate limit are each one SQL
statement in autocommit. Through SQLAlchemy's async engine such a statement costs about three
times the CPU it costs through psycopg directly (checkout bookkeeping, execution context,
result wrapping), which on the hot auth endpoints is most of the request. Everything else keeps
using SQLAlchemy sessions.

`limits` is a separate pool whose connections commit without waiting for the WAL flush
(`synchronous_commit = off`): a rate-limit counter's row lock then lasts for its statement only,
so requests from one address do not queue behind each other's disk writes. A crash can forget
the last fraction of a second of counts, which is harmless for a limit; nothing else uses it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

# Connections are kept (max_idle) rather than opened per burst; a checkout that waits longer
# than this is answered 503.
_CHECKOUT_TIMEOUT = 10.0
# Once a checkout has timed out, the next ones wait this long at most, until one succeeds.
_FAILING_CHECKOUT_TIMEOUT = 1.0


class Pool(AsyncConnectionPool[AsyncConnection]):
    """A pool that, once a checkout has timed out, gives up sooner on the next ones.

    While the database is down the pool cannot make connections, and every request would wait
    the whole checkout timeout before its 503. After one such wait the pool is known to be
    failing: later checkouts wait `_FAILING_CHECKOUT_TIMEOUT`, until one gets a connection
    (the database is back, or a connection of a saturated pool came free)."""

    failing = False

    # The signature is psycopg_pool's, which `connection()` calls.
    async def getconn(self, timeout: float | None = None) -> AsyncConnection:  # noqa: ASYNC109
        if timeout is None and self.failing:
            timeout = _FAILING_CHECKOUT_TIMEOUT
        try:
            conn = await super().getconn(timeout)
        except PoolTimeout:
            self.failing = True
            raise
        self.failing = False
        return conn


@dataclass
class HotPools:
    main: Pool
    limits: Pool
    _checking: asyncio.Task[None] | None = field(default=None, repr=False)

    async def open(self) -> None:
        # Not waiting: a database that is down at start answers 503 until it is up.
        await self.main.open(wait=False)
        await self.limits.open(wait=False)

    async def close(self) -> None:
        await self.main.close()
        await self.limits.close()

    def recheck(self) -> None:
        """After a broken connection: test the idle ones now (in the background, one check at a
        time), so a restarted database costs a failed request or two, not one per connection."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self._check())

    async def _check(self) -> None:
        for pool in (self.main, self.limits):
            await pool.check()


def create_hot_pools(database_url: str) -> HotPools:
    conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    return HotPools(
        main=_pool(conninfo, "papyrus-hot", max_size=10, options=None),
        limits=_pool(conninfo, "papyrus-limits", max_size=5, options="-c synchronous_commit=off"),
    )


def _pool(conninfo: str, name: str, *, max_size: int, options: str | None) -> Pool:
    kwargs: dict[str, object] = {"autocommit": True}
    if options:
        kwargs["options"] = options
    return Pool(
        conninfo,
        kwargs=kwargs,
        min_size=1,
        max_size=max_size,
        name=name,
        open=False,
        timeout=_CHECKOUT_TIMEOUT,
    )
