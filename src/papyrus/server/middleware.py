"""ASGI middleware that protects the application from what clients send.

`BodyLimit` reads every request body in full, bounded in size and in time, *before* the
application sees the request. Routes, dependencies and database sessions therefore never wait
on the network: a client that stalls its body holds a small buffer and a socket, never a
database connection or an open transaction. Bodies are JSON only: anything else is a clear 415,
decided from the headers before reading, rather than a confusing 422.

`CatchAll` turns an unexpected exception into the one error shape without letting it escape to
the server, so it is logged once and the keep-alive connection survives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from papyrus.server.errors import error_response

log = logging.getLogger(__name__)

# Auth, profile and every other JSON body: a register request is well under 2 KiB.
DEFAULT_MAX_BODY_BYTES = 16 * 1024


class BodyLimit:
    """Per-path body caps (exact paths, a default for the rest) and a body-read deadline.

    The cap is enforced from Content-Length before a byte is read, and while reading a chunked
    body. Refusals close the connection: what is left of the body is never read.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Mapping[str, int],
        default: int = DEFAULT_MAX_BODY_BYTES,
        timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.limits = dict(limits)
        self.default = default
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"content-type":
                content_type = value
        if not chunked and (length is None or length == b"0"):
            await self.app(scope, receive, send)  # no body to wait for
            return
        limit = self.limits.get(scope["path"], self.default)
        if length is not None:
            if not length.isdigit():
                await _refuse(scope, send, 400, "invalid_content_length", "Invalid Content-Length.")
                return
            if int(length) > limit:
                await _too_large(scope, send, limit)
                return
        if content_type.split(b";")[0].strip().lower() != b"application/json":
            await _refuse(
                scope,
                send,
                415,
                "unsupported_media_type",
                "Send the request body as application/json.",
            )
            return
        body = bytearray()
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        log.info("client went away while sending %s %s", *_method_path(scope))
                        return
                    body += message.get("body", b"")
                    if len(body) > limit:
                        await _too_large(scope, send, limit)
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            log.info("request body not received in %gs: %s %s", self.timeout, *_method_path(scope))
            await _refuse(
                scope,
                send,
                408,
                "request_timeout",
                f"The request body did not arrive within {self.timeout:g} seconds.",
            )
            return
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hands the buffered body to the application once, then the server's own events
    (a later disconnect) as usual."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    message = f"The request body may be at most {limit} bytes."
    if limit > DEFAULT_MAX_BODY_BYTES:  # the upload: say how to fix it
        message = f"An upload may be at most {limit} bytes; keep client transactions smaller."
    await _refuse(scope, send, 413, "payload_too_large", message, {"max_bytes": limit})


async def _refuse(
    scope: Scope, send: Send, status: int, code: str, message: str, details: object = None
) -> None:
    response = error_response(status, code, message, details, headers={"Connection": "close"})
    await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _method_path(scope: Scope) -> tuple[str, str]:
    return scope.get("method", "?"), scope.get("path", "?")


class CatchAll:
    """The last line: an exception no handler knew becomes a 500 in the error shape.

    Starlette's own last-resort handler answers too, but then re-raises to the server, which
    logs the traceback a second time and drops the keep-alive connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            method, path = _method_path(scope)
            log.error("unhandled %s on %s %s", type(exc).__name__, method, path, exc_info=exc)
            response = error_response(500, "internal_error", "Something went wrong on our side.")
            await response(scope, receive, send)
