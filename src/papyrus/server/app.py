"""The FastAPI application: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from papyrus.server import migrate
from papyrus.server.accounts.router import auth_router, users_router
from papyrus.server.config import Settings
from papyrus.server.db import create_engine, session_factory
from papyrus.server.errors import (
    DATABASE_RETRY_AFTER,
    ErrorResponse,
    error_response,
    install_error_handlers,
)
from papyrus.server.hotdb import create_hot_pools
from papyrus.server.library.router import router as library_router
from papyrus.server.lifecycle.export import CONCURRENT_EXPORTS
from papyrus.server.lifecycle.pages import pages_router
from papyrus.server.lifecycle.router import router as lifecycle_router
from papyrus.server.logs import install_log_redaction
from papyrus.server.mail.outbox import MailSender
from papyrus.server.middleware import BodyLimit, CatchAll
from papyrus.server.oauth.router import oauth_router
from papyrus.server.powersync.keys import load_keyset
from papyrus.server.powersync.router import router as powersync_router
from papyrus.server.sync.router import PARTS_PATH, UPLOAD_PATH
from papyrus.server.sync.router import PREFIX as SYNC_PREFIX
from papyrus.server.sync.router import router as sync_router
from papyrus.server.sync.schemas import UploadPartRequest, UploadRequest
from papyrus.server.sync.validation import MAX_BODY_BYTES

# Request bodies larger than `middleware.DEFAULT_MAX_BODY_BYTES`, by exact path.
BODY_LIMITS = {
    f"/v1{SYNC_PREFIX}{UPLOAD_PATH}": MAX_BODY_BYTES,
    f"/v1{SYNC_PREFIX}{PARTS_PATH}": MAX_BODY_BYTES,
}

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url())
        hot_pools = create_hot_pools(settings.database_url())
        app.state.engine = engine
        app.state.hot_pools = hot_pools
        app.state.session_factory = session_factory(engine)
        app.state.mail = MailSender(settings, app.state.session_factory)
        app.state.export_slots = asyncio.Semaphore(CONCURRENT_EXPORTS)
        if settings.is_production:  # a bad PowerSync key fails the start, not the first request
            app.state.powersync_keys = load_keyset(settings)
        await hot_pools.open()
        app.state.mail.start()
        try:
            yield
        finally:
            await app.state.mail.stop()
            await hot_pools.close()
            await engine.dispose()

    app = FastAPI(
        title="Papyrus API",
        version="0.1.0",
        lifespan=lifespan,
        responses={415: {"model": ErrorResponse}, 500: {"model": ErrorResponse}},
    )
    app.state.settings = settings
    app.state.powersync_keys_lock = asyncio.Lock()
    install_error_handlers(app)
    install_log_redaction()
    # Outermost last: forwarding (if trusted) sets the client, then the body is read, then the
    # application runs under the catch-all.
    app.add_middleware(CatchAll)
    app.add_middleware(BodyLimit, limits=BODY_LIMITS, timeout=settings.REQUEST_BODY_TIMEOUT_SECONDS)
    if settings.FORWARDED_ALLOW_IPS:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.FORWARDED_ALLOW_IPS)

    # Routers sit directly under the app (no nested `/v1` router): each level of nesting costs
    # every request a walk through it. The hot token routes come first.
    for router in (
        powersync_router,
        auth_router,
        users_router,
        lifecycle_router,
        oauth_router,
        sync_router,
        library_router,
    ):
        app.include_router(router, prefix="/v1")
    app.include_router(pages_router)
    app.include_router(_health_router())
    _document_raw_bodies(app)
    return app


def _document_raw_bodies(app: FastAPI) -> None:
    """The upload routes read their bodies themselves, so FastAPI cannot see their models:
    their `openapi_extra` points at `UploadRequest`/`UploadPartRequest`, added here."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, routes=app.routes, servers=app.servers
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (UploadRequest, UploadPartRequest):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


class Readiness(BaseModel):
    status: str
    database: str
    migrations: list[str]


def _health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health")
    async def health() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @router.get(
        "/health/ready", response_model=Readiness, responses={503: {"model": ErrorResponse}}
    )
    async def ready(request: Request) -> JSONResponse:
        """The database answers and its schema is at the newest migration."""
        try:
            async with request.app.state.engine.connect() as conn:
                rows = await conn.scalars(text("SELECT version_num FROM alembic_version"))
                current = sorted(rows)
        except Exception as exc:
            log.warning("readiness: database unavailable (%s)", type(exc).__name__)
            return error_response(
                503,
                "not_ready",
                "The database is unreachable.",
                headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
            )
        if set(current) != migrate.head_revisions():
            return error_response(
                503, "not_ready", "Database migrations are not at head.", {"current": current}
            )
        return JSONResponse({"status": "ready", "database": "ok", "migrations": current})

    return router


def app_from_environment() -> FastAPI:
    """Factory for uvicorn workers: they inherit the resolved settings through the environment."""
    settings = Settings()
    logging.basicConfig(level=settings.LOG_LEVEL.upper())
    return create_app(settings)
