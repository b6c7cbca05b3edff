"""How much mail one address may be sent: a fixed hourly window per address.

The counter lives in `rate_limit_counters` like every other limit (so it holds across
processes), keyed by an HMAC of the address under the server's secret: the table never holds
the address itself, and counting is the same whether or not an account uses it. Old windows are
swept with the other counters (`accounts.ratelimit`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from papyrus.server.config import Settings
from papyrus.server.errors import RateLimited
from papyrus.server.hotdb import Pool

_WINDOW = 3600
_HIT_SQL = """
    INSERT INTO rate_limit_counters AS c (key, window_start, count)
    VALUES (%(key)s, %(window)s, 1)
    ON CONFLICT (key, window_start) DO UPDATE SET count = c.count + 1
    RETURNING c.count
    """


def address_key(settings: Settings, address: str) -> str:
    digest = hmac.new(settings.access_token_secret.encode(), address.encode(), hashlib.sha256)
    return f"mail:{digest.hexdigest()[:32]}"


@dataclass(frozen=True)
class MailWindow:
    """This hour's counter for one address: the row to count in, and what a refusal says."""

    key: str
    start: datetime
    retry_after: int

    def refuse_if_over(self, count: int, settings: Settings) -> None:
        if count > settings.RATE_LIMIT_MAIL_PER_ADDRESS_PER_HOUR:
            raise RateLimited(
                self.retry_after, "Too many messages to this address; try again later."
            )


def mail_window(settings: Settings, address: str) -> MailWindow:
    now = time.time()
    start = math.floor(now / _WINDOW) * _WINDOW
    return MailWindow(
        address_key(settings, address),
        datetime.fromtimestamp(start, UTC),
        math.ceil(start + _WINDOW - now),
    )


async def hit_mail_limit(pool: Pool, settings: Settings, address: str) -> None:
    """Counts one mail to `address`; 429 once this hour's budget is spent."""
    window = mail_window(settings, address)
    async with pool.connection() as conn:
        cursor = await conn.execute(_HIT_SQL, {"key": window.key, "window": window.start})
        row = await cursor.fetchone()
    assert row is not None
    window.refuse_if_over(row[0], settings)
