"""A local mail catcher for `papyrus dev` (and the tests): a real SMTP server on loopback that
keeps every message it receives, as an `.eml` file under a directory and in memory, and reports
each one (with the links in it) to a callback, so account mail works on one machine with no
mail server set up.

It is an aiosmtpd server run on its own event loop in a thread. Extra `smtp` arguments are
aiosmtpd's (`tls_context`, `require_starttls`, `authenticator`, ...), and `ssl_context` makes it
speak implicit TLS, so the tests can check the sender against each kind of server.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_LINK = re.compile(r"https?://[^\s<>\"']+")


@dataclass(frozen=True)
class CaughtMail:
    mail_from: str
    recipients: tuple[str, ...]
    message: EmailMessage
    path: Path | None
    tls: bool = False  # the message came over TLS (STARTTLS or implicit)
    authenticated: bool = False  # the client logged in
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def body(self, subtype: str = "plain") -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        return str(part.get_content()) if part is not None else ""

    @property
    def links(self) -> list[str]:
        return _LINK.findall(self.body("plain"))


class _Handler:
    def __init__(self, catcher: MailCatcher) -> None:
        self.catcher = catcher

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.catcher._received(
            envelope.mail_from or "",
            tuple(envelope.rcpt_tos),
            content,
            tls=session.ssl is not None,
            authenticated=bool(session.authenticated),
        )
        return "250 Message accepted for delivery"


class MailCatcher:
    handler_class: type[_Handler] = _Handler

    def __init__(
        self,
        directory: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_message: Callable[[CaughtMail], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **smtp: Any,
    ) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.on_message = on_message
        self.ssl_context = ssl_context
        self.smtp_kwargs = smtp
        self.messages: list[CaughtMail] = []
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._count = 0

    def start(self) -> MailCatcher:
        """Listens (on `port`, or a free one when it is 0: read `self.port` afterwards)."""
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # aiosmtpd logs every SMTP command at INFO; each message is reported once instead.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="mail-catcher", daemon=True)
        self._thread.start()
        handler = self.handler_class(self)
        kwargs = {"hostname": "localhost", **self.smtp_kwargs}

        async def listen() -> asyncio.Server:
            return await loop.create_server(
                lambda: SMTP(handler, **kwargs), self.host, self.port, ssl=self.ssl_context
            )

        try:
            self._server = asyncio.run_coroutine_threadsafe(listen(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._server is not None:
            server = self._server

            async def close() -> None:
                server.close()
                await server.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
            self._server = None
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()
        self._loop = None

    def __enter__(self) -> MailCatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _received(
        self,
        mail_from: str,
        recipients: tuple[str, ...],
        content: bytes,
        *,
        tls: bool = False,
        authenticated: bool = False,
    ) -> None:
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        path = None
        with self._changed:
            self._count += 1
            if self.directory is not None:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                path = self.directory / f"{stamp}-{time.monotonic_ns()}-{self._count}.eml"
                path.write_bytes(content)
            caught = CaughtMail(mail_from, recipients, message, path, tls, authenticated)
            self.messages.append(caught)
            self._changed.notify_all()
        if self.on_message is not None:
            self.on_message(caught)

    def wait_for(
        self, predicate: Callable[[CaughtMail], bool], timeout: float = 15.0
    ) -> CaughtMail:
        """The first message (already received or arriving within `timeout`) that matches."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for caught in self.messages:
                    if predicate(caught):
                        return caught
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching mail arrived")
                self._changed.wait(remaining)
