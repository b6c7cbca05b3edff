"""Rate limits kept in PostgreSQL, so they hold across every server process.

Each check is one autocommit statement on the `limits` pool (`hotdb`), whose commits do not
wait for the WAL flush: a counter's row lock lasts for the statement alone, so many requests from
one address do not queue behind each other. A request that later fails still counts.

Per-address limits are sliding windows over one-minute buckets (`rate_limit_counters`, one row
per key and minute): the current minute's count plus the previous minute's, weighted by how much
of it still lies inside the last sixty seconds.

Failed logins (`login_failures`) are counted per email *and source*, so guessing at an address
locks the guesser, not the address: a source with `per_source` failures for an email is refused
for that email, whatever password it sends. A higher `per_email` limit over every source bounds
guessing from many addresses; once it is reached, only sources that have signed in to the account
before (`login_known_sources`, recorded on every successful sign-in) may still try. A source is an
IPv4 address or an IPv6 /64, since one host can use a whole /64.
"""

from __future__ import annotations

import ipaddress
import math
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from papyrus.server.errors import RateLimited
from papyrus.server.hotdb import Pool

_WINDOW = 60
_SOURCE_MAX = 64


def source_of(address: str) -> str:
    """The unit a limit counts: an IPv4 address, an IPv6 /64, or whatever the peer is called."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:_SOURCE_MAX]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


_HIT_SQL = """
    WITH hit AS (
        INSERT INTO rate_limit_counters AS c (key, window_start, count)
        VALUES (%(key)s, %(window)s, 1)
        ON CONFLICT (key, window_start) DO UPDATE SET count = c.count + 1
        RETURNING c.count)
    SELECT hit.count, coalesce((SELECT p.count FROM rate_limit_counters p
                                WHERE p.key = %(key)s AND p.window_start = %(previous)s), 0)
    FROM hit
    """
_SWEEP_COUNTERS_SQL = (
    "DELETE FROM rate_limit_counters WHERE window_start < now() - interval '1 hour'"
)


async def hit_ip_limit(pool: Pool, ip: str, per_minute: int, scope: str = "auth") -> None:
    """Counts one request from `ip`'s source; 429 once the last sixty seconds' budget is spent."""
    now = time.time()
    minute = math.floor(now / _WINDOW) * _WINDOW
    window = datetime.fromtimestamp(minute, UTC)
    params = {
        "key": f"{scope}:ip:{source_of(ip)}",
        "window": window,
        "previous": window - timedelta(seconds=_WINDOW),
    }
    async with pool.connection() as conn:
        current, previous = await _one(conn, _HIT_SQL, params)
        if random.random() < 0.001:  # occasional sweep of old windows
            await conn.execute(_SWEEP_COUNTERS_SQL)
    elapsed = now - minute
    weight = 1 - elapsed / _WINDOW
    if current + previous * weight > per_minute:
        raise RateLimited(_seconds_until_allowed(current, previous, elapsed, per_minute))


def _seconds_until_allowed(current: int, previous: int, elapsed: float, limit: int) -> int:
    if current >= limit or previous == 0:
        return math.ceil(_WINDOW - elapsed)  # only the next minute frees budget
    # previous * (1 - t / 60) + current <= limit, for t the time into this minute
    t = _WINDOW * (1 - (limit - current) / previous)
    return max(1, math.ceil(t - elapsed))


_LOGIN_STATE_SQL = """
    SELECT count(*) FILTER (WHERE f.source = %(source)s),
           min(f.failed_at) FILTER (WHERE f.source = %(source)s),
           count(*),
           min(f.failed_at),
           EXISTS (SELECT 1 FROM login_known_sources k
                   WHERE k.email = %(email)s AND k.source = %(source)s
                     AND k.last_success_at > %(known)s)
    FROM login_failures f
    WHERE f.email = %(email)s AND f.failed_at > %(since)s
    """


async def check_login_failures(
    pool: Pool,
    email: str,
    ip: str,
    *,
    per_source: int,
    per_email: int,
    window_seconds: int,
    known_days: int,
) -> None:
    """Raises 429 while this source may not try a password for `email` (see the module doc)."""
    now = datetime.now(UTC)
    since = now - timedelta(seconds=window_seconds)
    params = {
        "email": email,
        "source": source_of(ip),
        "since": since,
        "known": now - timedelta(days=known_days),
    }
    async with pool.connection() as conn:
        mine, my_oldest, total, oldest, known = await _one(conn, _LOGIN_STATE_SQL, params)
    message = "Too many failed sign-ins; try again later."
    if mine >= per_source:
        raise RateLimited(int((my_oldest - since).total_seconds()) + 1, message)
    if total >= per_email and not known:
        raise RateLimited(int((oldest - since).total_seconds()) + 1, message)


_FAILURE_SQL = "INSERT INTO login_failures (email, source) VALUES (%(email)s, %(source)s)"
_SWEEP_FAILURES_SQL = """
    WITH old AS (DELETE FROM login_failures WHERE failed_at < now() - interval '1 day')
    DELETE FROM login_known_sources WHERE last_success_at < now() - CAST(%(keep)s AS interval)
    """
_SUCCESS_SQL = """
    WITH cleared AS (DELETE FROM login_failures WHERE email = %(email)s AND source = %(source)s)
    INSERT INTO login_known_sources AS k (email, source, last_success_at)
    VALUES (%(email)s, %(source)s, now())
    ON CONFLICT (email, source) DO UPDATE SET last_success_at = now()
    """


async def record_login_failure(pool: Pool, email: str, ip: str, known_days: int) -> None:
    async with pool.connection() as conn:
        await conn.execute(_FAILURE_SQL, {"email": email, "source": source_of(ip)})
        if random.random() < 0.01:
            await conn.execute(_SWEEP_FAILURES_SQL, {"keep": f"{known_days} days"})


async def record_login_success(pool: Pool, email: str, ip: str, known_days: int) -> None:
    """Forgets this source's failures for `email` (not other sources') and remembers it as a
    source the account's owner uses."""
    async with pool.connection() as conn:
        await conn.execute(_SUCCESS_SQL, {"email": email, "source": source_of(ip)})
        if random.random() < 0.01:
            await conn.execute(_SWEEP_FAILURES_SQL, {"keep": f"{known_days} days"})


async def _one(conn: AsyncConnection, query: str, params: dict[str, object]) -> tuple[Any, ...]:
    row = await (await conn.execute(query, params)).fetchone()
    assert row is not None
    return row
