"""HTTP routes for PowerSync credentials: a token for the signed-in user, and the public JWKS."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from papyrus.server.accounts.dependencies import CallerDep
from papyrus.server.config import Settings
from papyrus.server.errors import ErrorResponse
from papyrus.server.powersync import tokens
from papyrus.server.powersync.keys import KeySet, load_keyset
from papyrus.server.powersync.schemas import Jwks, PowerSyncTokenResponse

# Verifiers re-fetch on an unknown kid, so five minutes of caching only delays dropping an old key.
JWKS_CACHE_CONTROL = "public, max-age=300"

router = APIRouter(prefix="/auth", tags=["powersync"])


async def get_keyset(request: Request) -> KeySet:
    """Loaded on first use (in development this may generate the key pair), then kept. Loaded
    once: the first requests of a burst wait for it instead of each parsing the key."""
    state = request.app.state
    keyset: KeySet | None = getattr(state, "powersync_keys", None)
    if keyset is None:
        async with state.powersync_keys_lock:
            keyset = getattr(state, "powersync_keys", None)
            if keyset is None:
                keyset = await run_in_threadpool(load_keyset, state.settings)
                state.powersync_keys = keyset
    return keyset


KeySetDep = Annotated[KeySet, Depends(get_keyset)]


@router.post(
    "/powersync-token",
    response_model=PowerSyncTokenResponse,
    responses={401: {"model": ErrorResponse}},
)
async def issue_powersync_token(request: Request, caller: CallerDep) -> Response:
    """A short-lived token for the PowerSync service; its `sub` is the caller's user id."""
    settings: Settings = request.app.state.settings  # no sub-dependencies on this hot path
    keys = await get_keyset(request)
    token = tokens.create_powersync_token(
        keys.current,
        caller.user_id,
        settings.POWERSYNC_JWT_AUDIENCE,
        settings.POWERSYNC_TOKEN_TTL_SECONDS,
    )
    body = {"token": token, "expires_in": settings.POWERSYNC_TOKEN_TTL_SECONDS}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/jwks", response_model=Jwks)
async def jwks(keys: KeySetDep) -> Response:
    """The public keys of PowerSync tokens: the current one, and the previous during a rotation."""
    return JSONResponse(keys.jwks(), headers={"Cache-Control": JWKS_CACHE_CONTROL})
