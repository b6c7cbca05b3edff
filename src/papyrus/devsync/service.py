"""Wiring: replication thread, NOTIFY listener and the HTTP app of the development service.

Endpoints (same paths and shapes as the PowerSync service):
- `POST /sync/stream`: NDJSON sync lines (see `stream.py`).
- `GET /write-checkpoint2.json?client_id=...`: `{"data": {"write_checkpoint": "<n>"}}`.
- `GET /probes/liveness`, `/probes/readiness`, `/probes/startup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import uvicorn
from psycopg import sql
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from papyrus.devsync.auth import AuthError, KeyStore, TokenPayload, token_from_header
from papyrus.devsync.config import Settings
from papyrus.devsync.replication import Replicator
from papyrus.devsync.request import (
    RequestError,
    merged_params,
    read_json_body,
    validate_sync_request,
    validate_write_checkpoint_request,
)
from papyrus.devsync.storage import AsyncPool, StorageReader, StorageWriter, notify_channel
from papyrus.devsync.stream import CheckpointBroadcaster, StreamOptions, SyncSession
from papyrus.devsync.sync_rules import SyncConfig, load_sync_config

log = logging.getLogger(__name__)

_STREAM_HEADERS = {
    "x-accel-buffering": "no",
    "access-control-allow-origin": "*",
    "access-control-expose-headers": "Content-Type",
}


class DevSyncService:
    """Owns the sync config, the replicator, the storage reader and the stream wake-ups.

    The sync config is parsed on construction, so an unsupported construct stops start-up
    with a message that names it."""

    def __init__(self, settings: Settings, rules: SyncConfig | None = None) -> None:
        self.settings = settings
        self.rules = rules or load_sync_config(settings.sync_config_path)
        self.keys = KeyStore(
            settings.jwks_uri, list(settings.audiences), max_lifetime=settings.token_max_lifetime
        )
        self.pool = AsyncPool(settings.conninfo)
        self.reader = StorageReader(self.pool, settings.schema)
        self.replicator = Replicator(
            settings.conninfo,
            self.rules,
            schema=settings.schema,
            slot_name=settings.slot_name,
            publication=settings.publication,
            compact_every_ops=settings.compact_every_ops,
            compact_interval=settings.compact_interval,
        )
        self.stream_options = StreamOptions(
            keepalive_interval=settings.keepalive_interval,
            expiry_warning=settings.expiry_warning,
            chunk_ops=settings.data_chunk_ops,
        )
        self.broadcaster: CheckpointBroadcaster | None = None
        self.ready: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.broadcaster = CheckpointBroadcaster()
        self.ready = asyncio.Event()
        writer = StorageWriter(self.settings.conninfo, self.settings.schema)
        try:
            writer.ensure_schema()  # so the listener can read state before replication runs
        finally:
            writer.close()
        self.replicator.start()
        self._listener = asyncio.create_task(self._listen(), name="devsync-listen")

    def begin_shutdown(self) -> None:
        """End open streams so the HTTP server can stop."""
        if self.broadcaster is not None:
            self.broadcaster.close()

    async def stop(self) -> None:
        self.begin_shutdown()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await asyncio.to_thread(self.replicator.stop)
        await self.pool.close()

    async def _listen(self) -> None:
        """LISTEN for the replicator's commits (this or another process) and wake streams."""
        assert self.broadcaster is not None
        channel = notify_channel(self.settings.schema)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.settings.conninfo, autocommit=True
                )
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    await self._refresh_state()
                    async for notification in conn.notifies():
                        payload = json.loads(notification.payload)
                        buckets = payload.get("buckets")
                        if buckets is None:
                            await self._refresh_state()
                            self.broadcaster.publish(None)
                        else:
                            self.broadcaster.publish(
                                frozenset(buckets), message=bool(payload.get("message"))
                            )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checkpoint listener failed; reconnecting")
                self.broadcaster.publish(None)
                await asyncio.sleep(1.0)

    async def _refresh_state(self) -> None:
        """Bucket names carry the config version stored by the replicator."""
        assert self.ready is not None and self.broadcaster is not None
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL("SELECT config_version, snapshot_done, config_hash FROM {}.state").format(
                    sql.Identifier(self.settings.schema)
                )
            )
            row = await cur.fetchone()
        if row and row[1] and row[2] == self.rules.source_hash:
            if self.rules.version != row[0]:
                self.rules.set_version(row[0])
            self.ready.set()
        else:
            self.ready.clear()

    # -- request handling (thin wrappers over the pieces above) ----------------------------

    async def authenticate(self, request: Request) -> TokenPayload:
        token = token_from_header(request.headers.get("authorization"))
        return await self.keys.verify(token)

    def session(self, token: TokenPayload, body: dict[str, Any]) -> SyncSession:
        assert self.broadcaster is not None and self.ready is not None
        return SyncSession(
            reader=self.reader,
            rules=self.rules,
            broadcaster=self.broadcaster,
            ready=self.ready,
            user_id=token.user_id,
            token_payload=token.claims,
            token_exp=token.exp,
            request=body,
            options=self.stream_options,
        )

    def probe_state(self) -> dict[str, Any]:
        status = self.replicator.status
        return {
            "ready": bool(self.ready is not None and self.ready.is_set() and status.ready),
            "started": status.started,
            "touched_at": datetime.fromtimestamp(status.touched_at, UTC).isoformat(),
            **({"error": status.error} if status.error else {}),
        }


def _error(exc: AuthError | RequestError) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status)


async def _not_found(request: Request, exc: Exception) -> Response:
    """Unknown routes (and known paths with another method) as the service's RouteNotFound."""
    description = f'Route not found: {request.method} "{request.url.path}"'
    return _error(RequestError(404, "PSYNC_S2002", description, name="RouteNotFound"))


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected still answers in the service's shape (its InternalServerError),
    without the exception's text; the traceback goes to the log."""
    error = RequestError(500, "PSYNC_S2001", "Something went wrong", name="InternalServerError")
    return _error(error)


def create_app(settings: Settings, service: DevSyncService | None = None) -> Starlette:
    """The ASGI app; starting it starts replication and the NOTIFY listener."""
    svc = service or DevSyncService(settings)

    async def sync_stream(request: Request) -> Response:
        # Like the service: the request is read (bounded) and validated before the token.
        try:
            body = validate_sync_request(merged_params(request, await read_json_body(request)))
        except RequestError as exc:
            return _error(exc)
        try:
            token = await svc.authenticate(request)
        except AuthError as exc:
            return _error(exc)
        if svc.broadcaster is None or svc.broadcaster.closing:
            return JSONResponse(
                {
                    "error": {
                        "code": "PSYNC_S2003",
                        "status": 503,
                        "description": "Service temporarily unavailable",
                    }
                },
                status_code=503,
            )
        session = svc.session(token, body)
        return StreamingResponse(
            session.lines(), media_type="application/x-ndjson", headers=_STREAM_HEADERS
        )

    async def write_checkpoint2(request: Request) -> Response:
        try:
            client_id = validate_write_checkpoint_request(merged_params(request, {}))
            token = await svc.authenticate(request)
        except (RequestError, AuthError) as exc:
            return _error(exc)
        value = await svc.reader.create_write_checkpoint(token.user_id, client_id)
        return JSONResponse({"data": {"write_checkpoint": str(value)}})

    async def liveness(request: Request) -> Response:
        state = svc.probe_state()
        return JSONResponse(state, status_code=200 if state["started"] else 400)

    async def readiness(request: Request) -> Response:
        state = svc.probe_state()
        return JSONResponse(state, status_code=200 if state["ready"] else 400)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    app = Starlette(
        routes=[
            Route("/sync/stream", sync_stream, methods=["POST"]),
            Route("/write-checkpoint2.json", write_checkpoint2, methods=["GET"]),
            Route("/probes/liveness", liveness, methods=["GET"]),
            Route("/probes/startup", liveness, methods=["GET"]),
            Route("/probes/readiness", readiness, methods=["GET"]),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["Content-Type"],
            )
        ],
        exception_handlers={404: _not_found, 405: _not_found, Exception: _internal_error},
        lifespan=lifespan,
    )
    return app


class _Server(uvicorn.Server):
    """Ends open sync streams on Ctrl-C so shutdown does not wait for them."""

    def __init__(self, config: uvicorn.Config, service: DevSyncService) -> None:
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.service.begin_shutdown()
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    """Run the service in the foreground (blocking) until interrupted."""
    service = DevSyncService(settings)
    app = create_app(settings, service)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    _Server(config, service).run()
