"""The durable outbox and its sender.

`enqueue` adds a message to the caller's transaction: it exists exactly when that transaction
commits. `MailSender` runs in every API process: it claims due messages with
`FOR UPDATE SKIP LOCKED` (so several processes never take the same one), commits the claim as a
lease, and delivers outside any transaction, so no database connection waits on a mail server.
A delivered message is deleted. A failed attempt is retried after a doubling wait; a message
refused for good, past `MAIL_MAX_ATTEMPTS`, or whose link expired before it could be delivered
is marked failed, with its bodies cleared, logged and listed by `papyrus mail outbox`. A process
that dies mid-delivery leaves its lease to expire and another attempt follows: delivery is at
least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from papyrus.server.config import Settings
from papyrus.server.errors import is_database_unavailable
from papyrus.server.mail.message import Mail, mime
from papyrus.server.mail.models import FAILED, PENDING, OutboxMessage
from papyrus.server.mail.smtp import DeliveryError, deliver

log = logging.getLogger(__name__)

BATCH = 5
MAX_RETRY_WAIT = 3600.0
FAILED_RETENTION = timedelta(days=7)
_SWEEP_INTERVAL = 3600.0
_MIN_WAIT = 0.05
# How long a stopping process lets a delivery in progress finish.
_STOP_GRACE = 10.0


def enqueue(
    db: AsyncSession,
    mail: Mail,
    recipient: str,
    *,
    user_id: uuid.UUID | None,
    expires_at: datetime | None = None,
) -> None:
    """Adds `mail` to `db`'s transaction; nothing is sent unless that transaction commits."""
    db.add(
        OutboxMessage(
            user_id=user_id,
            kind=mail.kind,
            recipient=recipient,
            subject=mail.subject,
            body_text=mail.text,
            body_html=mail.html,
            expires_at=expires_at,
        )
    )


def mask_address(address: str) -> str:
    """For log lines: enough to tell messages apart, not the whole address."""
    local, at, domain = address.partition("@")
    return f"{local[:1]}***{at}{domain}"


def retry_wait(settings: Settings, attempts: int) -> float:
    return float(min(settings.MAIL_RETRY_BASE_SECONDS * 2 ** (attempts - 1), MAX_RETRY_WAIT))


_CLAIM_SQL = text(
    """
    UPDATE mail_outbox SET attempts = attempts + 1,
                           next_attempt_at = now() + make_interval(secs => :lease)
    WHERE id IN (SELECT id FROM mail_outbox
                 WHERE status = 'pending' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at, id
                 LIMIT :batch
                 FOR UPDATE SKIP LOCKED)
    RETURNING id, kind, recipient, subject, body_text, body_html, attempts, expires_at
    """
)
_NEXT_DUE_SQL = text("SELECT min(next_attempt_at) FROM mail_outbox WHERE status = 'pending'")
_SENT_SQL = text("DELETE FROM mail_outbox WHERE id = :id")
_UNCLAIM_SQL = text(
    "UPDATE mail_outbox SET attempts = attempts - 1, next_attempt_at = now() WHERE id = :id"
)
_RETRY_SQL = text(
    """
    UPDATE mail_outbox SET next_attempt_at = now() + make_interval(secs => :wait),
                           last_error = :error
    WHERE id = :id
    """
)
_FAILED_SQL = text(
    """
    UPDATE mail_outbox SET status = 'failed', failed_at = now(), last_error = :error,
                           body_text = NULL, body_html = NULL
    WHERE id = :id
    """
)
_SWEEP_SQL = text("DELETE FROM mail_outbox WHERE status = 'failed' AND failed_at < now() - :keep")


@dataclass(frozen=True)
class _Claimed:
    id: int
    kind: str
    recipient: str
    subject: str
    body_text: str | None
    body_html: str | None
    attempts: int
    expires_at: datetime | None


class MailSender:
    """The background sender of one API process (see the module doc)."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._swept_at = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.settings.SMTP_HOST is not None

    def start(self) -> None:
        if not self.enabled:
            log.warning(
                "outgoing mail is not configured (SMTP_HOST): messages wait in the outbox "
                "(`papyrus mail outbox`) until it is"
            )
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mail-sender")

    async def stop(self) -> None:
        """Lets a delivery in progress finish (briefly); claimed messages not yet attempted are
        handed back. A delivery cut short is retried once its lease expires."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=_STOP_GRACE)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=_STOP_GRACE)

    def wake(self) -> None:
        """Called after a request committed a message: deliver it now, not at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                claimed, next_due = await self.deliver_due()
            except Exception as exc:
                if is_database_unavailable(exc):
                    log.warning("mail outbox: database unavailable (%s)", type(exc).__name__)
                else:
                    log.exception("mail outbox: unexpected failure")
                claimed, next_due = 0, None
            if claimed >= BATCH or self._stopping:
                continue
            wait = self.settings.MAIL_POLL_SECONDS
            if next_due is not None:
                # At least a moment: a due row another process is claiming right now is skipped.
                due_in = (next_due - datetime.now(UTC)).total_seconds()
                wait = min(wait, max(_MIN_WAIT, due_in))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def deliver_due(self) -> tuple[int, datetime | None]:
        """Delivers (or gives up on) every message due now, up to a batch; returns how many it
        claimed and when the next pending one is due."""
        # Long enough for the whole batch, delivered one after the other.
        lease = BATCH * self._delivery_timeout() + 60
        async with self.sessions() as db:
            rows = (await db.execute(_CLAIM_SQL, {"lease": lease, "batch": BATCH})).all()
            await db.commit()
        for row in rows:
            if self._stopping:
                await self._execute(_UNCLAIM_SQL, {"id": row.id})
                continue
            await self._attempt(_Claimed(*row))
        async with self.sessions() as db:
            if time.monotonic() - self._swept_at > _SWEEP_INTERVAL:
                self._swept_at = time.monotonic()
                await db.execute(_SWEEP_SQL, {"keep": FAILED_RETENTION})
            next_due = await db.scalar(_NEXT_DUE_SQL)
            await db.commit()
        return len(rows), next_due

    def _delivery_timeout(self) -> float:
        # aiosmtplib bounds each step; this bounds the whole conversation.
        return self.settings.SMTP_TIMEOUT_SECONDS * 3

    async def _attempt(self, message: _Claimed) -> None:
        where = f"mail {message.id} ({message.kind} to {mask_address(message.recipient)})"
        if message.expires_at is not None and message.expires_at <= datetime.now(UTC):
            await self._failed(message, where, "its link expired before it could be delivered")
            return
        if message.body_text is None:
            await self._failed(message, where, "no body")
            return
        try:
            async with asyncio.timeout(self._delivery_timeout()):
                await deliver(
                    self.settings,
                    mime(
                        self.settings.MAIL_FROM,
                        message.recipient,
                        message.subject,
                        message.body_text,
                        message.body_html,
                    ),
                )
        except TimeoutError:
            error: DeliveryError = DeliveryError("timed out", permanent=False)
        except DeliveryError as exc:
            error = exc
        else:
            await self._execute(_SENT_SQL, {"id": message.id})
            log.info("%s sent (attempt %d)", where, message.attempts)
            return
        if error.permanent or message.attempts >= self.settings.MAIL_MAX_ATTEMPTS:
            await self._failed(message, where, str(error))
            return
        wait = retry_wait(self.settings, message.attempts)
        await self._execute(_RETRY_SQL, {"id": message.id, "wait": wait, "error": str(error)})
        log.info(
            "%s not delivered (attempt %d), next attempt in %gs: %s",
            where,
            message.attempts,
            wait,
            error,
        )

    async def _failed(self, message: _Claimed, where: str, error: str) -> None:
        await self._execute(_FAILED_SQL, {"id": message.id, "error": error[:500]})
        log.warning(
            "%s FAILED after %d attempt(s): %s (listed by `papyrus mail outbox`)",
            where,
            message.attempts,
            error,
        )

    async def _execute(self, statement: Any, params: dict[str, Any]) -> None:
        async with self.sessions() as db:
            await db.execute(statement, params)
            await db.commit()


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    kind: str
    recipient: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    failed_at: datetime | None
    last_error: str | None


def list_outbox(database_url: str, *, include_failed: bool = True) -> list[OutboxEntry]:
    """Every message not delivered yet, oldest first (for the operator's CLI)."""
    conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    statuses = [PENDING, FAILED] if include_failed else [PENDING]
    with psycopg.connect(conninfo, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT id, kind, recipient, status, attempts, created_at, next_attempt_at,"
            " failed_at, last_error FROM mail_outbox WHERE status = ANY(%s)"
            " ORDER BY status DESC, created_at, id",
            (statuses,),
        ).fetchall()
    return [OutboxEntry(**row) for row in rows]
