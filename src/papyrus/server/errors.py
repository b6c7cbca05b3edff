"""The one error shape: `{"error": {"code", "message", "details"}}`, for every failure.

Domain code raises `ApiError` subclasses; handlers here turn those, FastAPI's validation errors
and Starlette's 404/405 into the shape. A database that cannot be reached is a 503 with
`Retry-After` (clients retry), logged once without a traceback. Other unexpected exceptions are
logged (type and traceback, never request bodies) and answered with a bare 500 by
`middleware.CatchAll`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    status_code = 400
    code = "bad_request"
    message = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = headers
        super().__init__(self.message)


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"
    message = "Authentication required."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class NotFound(ApiError):
    status_code = 404
    code = "not_found"
    message = "Not found."


class Conflict(ApiError):
    status_code = 409
    code = "conflict"
    message = "Conflict."


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"
    message = "The request body is too large."


class UnsupportedMediaType(ApiError):
    status_code = 415
    code = "unsupported_media_type"
    message = "Send the request body as application/json."


class RateLimited(ApiError):
    status_code = 429
    code = "rate_limited"
    message = "Too many requests; try again later."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        retry_after = max(1, int(retry_after))
        super().__init__(
            message,
            details={"retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable."


# Seconds a client should wait before retrying after the database was unreachable.
DATABASE_RETRY_AFTER = 5
# SQLSTATE classes worth a retry: connection, transaction rollback (deadlock, serialization),
# insufficient resources, operator intervention (shutdown, statement timeout).
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")


def is_database_unavailable(exc: BaseException) -> bool:
    """Trouble a retry can fix: the server is down or restarting, the pool is exhausted, the
    connection broke, or the database asked for a retry (deadlock, serialization failure).
    For SQLAlchemy's wrapped errors and for psycopg's own (the `hotdb` pools)."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return exc.connection_invalidated or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True  # includes psycopg_pool.PoolTimeout
    if isinstance(exc, psycopg.Error):
        return (exc.sqlstate or "")[:2] in TRANSIENT_SQLSTATE_CLASSES
    return False


def database_unavailable() -> JSONResponse:
    return error_response(
        503,
        "service_unavailable",
        "The database is temporarily unavailable; retry shortly.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
    )


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status_code, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo `input`: it may hold a password or a token.
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    if any(d["type"] == "json_invalid" for d in details):
        return error_response(400, "invalid_json", "The request body is not valid JSON.", details)
    return error_response(422, "validation_error", "The request is invalid.", details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = exc.headers
    if exc.status_code == 405:
        # Each method of a path is its own route, and Starlette names only the first in Allow.
        allowed = allowed_methods(request)
        if request.method == "OPTIONS":
            return Response(
                status_code=204, headers={"Allow": ", ".join(sorted([*allowed, "OPTIONS"]))}
            )
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "Request failed."
    return error_response(exc.status_code, code, message, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the application accepts on this path."""
    methods: set[str] = set()
    path = request.scope["path"]
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods.update(route.methods or ())
    return sorted(methods)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_unavailable(exc):
        raise exc  # a bug, not an outage: the catch-all logs it and answers 500
    log.warning(
        "database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
    )
    pools = getattr(request.app.state, "hot_pools", None)
    if pools is not None:
        pools.recheck()
    return database_unavailable()


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    # Nobody is left to answer; not an error of ours.
    log.info("client went away during %s %s", request.method, request.url.path)
    return Response(status_code=499)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)
    app.add_exception_handler(psycopg.Error, _database_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
