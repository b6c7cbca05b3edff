"""HTTP routes for accounts and sessions: thin wrappers over `service`."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Body, Request, Response, status

from papyrus.server.accounts import ratelimit, service
from papyrus.server.accounts.dependencies import (
    AuthRateLimit,
    CallerDep,
    DbDep,
    LimitsPoolDep,
    SettingsDep,
    client_ip,
)
from papyrus.server.accounts.schemas import (
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    RegisterRequest,
    SessionPublic,
    TokenResponse,
    UserPublic,
    UserUpdate,
)
from papyrus.server.errors import ErrorResponse
from papyrus.server.lifecycle import service as lifecycle

_errors: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    429: {"model": ErrorResponse},
}

auth_router = APIRouter(prefix="/auth", tags=["auth"], responses=_errors)
users_router = APIRouter(prefix="/users", tags=["users"], responses=_errors)


@auth_router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    dependencies=[AuthRateLimit],
    responses={409: {"model": ErrorResponse}},
)
async def register(
    request: Request,
    body: RegisterRequest,
    db: DbDep,
    settings: SettingsDep,
    limits: LimitsPoolDep,
) -> TokenResponse:
    """Create an email/password account and sign it in; a link to confirm the address is
    mailed (in the same transaction as the account, so a crash cannot lose it)."""
    user = await service.create_user(
        db, email=body.email, password=body.password, display_name=body.display_name
    )
    await lifecycle.queue_verification(db, settings, user)
    tokens = await service.start_session(db, settings, user, body.client_type, body.device_label)
    request.app.state.mail.wake()
    await ratelimit.record_login_success(
        limits, body.email, client_ip(request), settings.RATE_LIMIT_LOGIN_KNOWN_SOURCE_DAYS
    )
    return tokens


@auth_router.post("/login", dependencies=[AuthRateLimit])
async def login(
    request: Request,
    body: LoginRequest,
    db: DbDep,
    settings: SettingsDep,
    limits: LimitsPoolDep,
) -> TokenResponse:
    """Sign in with email and password.

    Failures are limited per email and source; see the README's security section."""
    ip = client_ip(request)
    await ratelimit.check_login_failures(
        limits,
        body.email,
        ip,
        per_source=settings.RATE_LIMIT_LOGIN_FAILURES_PER_SOURCE,
        per_email=settings.RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL,
        window_seconds=settings.RATE_LIMIT_LOGIN_FAILURE_WINDOW_SECONDS,
        known_days=settings.RATE_LIMIT_LOGIN_KNOWN_SOURCE_DAYS,
    )
    try:
        user = await service.login(db, body.email, body.password)
    except service.InvalidCredentials:
        await ratelimit.record_login_failure(
            limits, body.email, ip, settings.RATE_LIMIT_LOGIN_KNOWN_SOURCE_DAYS
        )
        raise
    await ratelimit.record_login_success(
        limits, body.email, ip, settings.RATE_LIMIT_LOGIN_KNOWN_SOURCE_DAYS
    )
    return await service.start_session(db, settings, user, body.client_type, body.device_label)


@auth_router.post("/refresh", dependencies=[AuthRateLimit], response_model=TokenResponse)
async def refresh(request: Request, body: RefreshRequest) -> Response:
    """Exchange a refresh token for new tokens; the presented one stops working."""
    state = request.app.state  # no sub-dependencies on this hot path
    tokens = await service.refresh(state.hot_pools.main, state.settings, body.refresh_token)
    # Serialised here by the model itself: FastAPI would validate it a second time.
    return Response(tokens.model_dump_json(), media_type="application/json")


@auth_router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    caller: CallerDep, db: DbDep, body: LogoutRequest | None = Body(default=None)
) -> Response:
    """End this session, or every session of the user with `all_devices`."""
    all_devices = body is not None and body.all_devices
    await service.revoke_sessions(
        db,
        caller.user_id,
        session_id=None if all_devices else caller.session_id,
        reason="logout_all" if all_devices else "logout",
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@auth_router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT)
async def logout_all(caller: CallerDep, db: DbDep) -> Response:
    """End every session of the user, on every device."""
    await service.revoke_sessions(db, caller.user_id, reason="logout_all")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@auth_router.get("/sessions")
async def list_sessions(caller: CallerDep, db: DbDep) -> list[SessionPublic]:
    """The caller's active sessions."""
    return await service.list_sessions(db, caller.user_id, caller.session_id)


@auth_router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"model": ErrorResponse}},
)
async def revoke_session(session_id: uuid.UUID, caller: CallerDep, db: DbDep) -> Response:
    """End one of the caller's sessions."""
    await service.revoke_one_session(db, caller.user_id, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@users_router.get("/me")
async def read_me(caller: CallerDep, db: DbDep) -> UserPublic:
    """The signed-in user."""
    return await service.user_public(db, await service.get_user(db, caller.user_id))


@users_router.patch("/me")
async def update_me(body: UserUpdate, caller: CallerDep, db: DbDep) -> UserPublic:
    """Change the display name or avatar."""
    user = await service.update_user(db, await service.get_user(db, caller.user_id), body)
    return await service.user_public(db, user)
