"""HTTP routes for Google sign-in and linking: thin wrappers over `service`.

The start and callback routes are opened by a browser, so their errors are an HTML page when
the browser asks for HTML, and the usual JSON error shape otherwise.
"""

from __future__ import annotations

import html
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from papyrus.server.accounts import service as accounts
from papyrus.server.accounts.dependencies import AuthRateLimit, CallerDep, DbDep, SettingsDep
from papyrus.server.accounts.schemas import TokenResponse, UserPublic
from papyrus.server.config import Settings
from papyrus.server.errors import ApiError, ErrorResponse
from papyrus.server.oauth import service
from papyrus.server.oauth.provider import OidcProvider, google_callback_url, google_provider
from papyrus.server.oauth.schemas import (
    ExchangeCodeRequest,
    LinkCompleteRequest,
    LinkStartRequest,
    LinkStartResponse,
)

# Codes and states travel in these URLs: keep them out of caches and Referer headers.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache", "Referrer-Policy": "no-referrer"}
_error = {"model": ErrorResponse}
_browser_error = {"model": ErrorResponse, "content": {"text/html": {}}}

oauth_router = APIRouter(prefix="/auth", tags=["oauth"])


async def get_google(request: Request, settings: SettingsDep) -> OidcProvider:
    provider = google_provider(request.app.state, settings)
    if provider is None:
        raise service.OAuthNotConfigured()
    return provider


GoogleDep = Annotated[OidcProvider, Depends(get_google)]


@oauth_router.get(
    "/oauth/google/start",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    dependencies=[AuthRateLimit],
    responses={400: _browser_error, 422: _error, 429: _error, 503: _browser_error},
)
async def google_start(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    redirect_uri: Annotated[str | None, Query(max_length=2048)] = None,
    # Unbounded here and checked by the service, so a malformed one is a 400 (or the error page).
    code_challenge: Annotated[
        str | None, Query(description="The app's PKCE S256 challenge (RFC 7636).")
    ] = None,
    code_challenge_method: Annotated[str | None, Query(description='Only "S256".')] = None,
) -> Response:
    """Open in the system browser: redirects to Google, which comes back to the callback.

    Apps send a PKCE `code_challenge` (S256) and later the verifier to `/auth/exchange-code`;
    it is required for custom-scheme callbacks such as `papyrus://auth/callback`.
    """
    try:
        provider = await get_google(request, settings)
        target = service.check_redirect_uri(settings, redirect_uri)
        challenge = service.check_app_pkce(settings, target, code_challenge, code_challenge_method)
        started = await service.start_flow(
            db, provider, target, purpose=service.SIGN_IN, app_code_challenge=challenge
        )
    except ApiError as exc:
        return _error_page(request, exc)
    response = RedirectResponse(
        started.authorization_url, status_code=status.HTTP_302_FOUND, headers=_NO_STORE
    )
    if started.browser_cookie:
        name, value = started.browser_cookie
        response.set_cookie(
            name,
            value,
            max_age=int(service.STATE_TTL.total_seconds()),
            path=_cookie_path(settings),
            secure=settings.PUBLIC_BASE_URL.startswith("https://"),
            httponly=True,
            samesite="lax",  # sent on the top-level redirect back from Google
        )
    return response


@oauth_router.get(
    "/oauth/google/callback",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    dependencies=[AuthRateLimit],
    responses={400: _browser_error, 422: _error, 429: _error, 503: _browser_error},
)
async def google_callback(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    state: Annotated[str | None, Query(max_length=4096)] = None,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    error: Annotated[str | None, Query(max_length=4096)] = None,
    iss: Annotated[str | None, Query(max_length=4096)] = None,
) -> Response:
    """Google sends the browser here; it goes on to the app with a one-time code or an error."""
    try:
        provider = await get_google(request, settings)
        url = await service.finish_callback(
            db,
            settings,
            provider,
            state=state,
            code=code,
            error=error,
            iss=iss,
            cookies=request.cookies,
        )
    except ApiError as exc:
        return _error_page(request, exc)
    response = RedirectResponse(url, status_code=status.HTTP_302_FOUND, headers=_NO_STORE)
    if state:
        response.delete_cookie(service.browser_cookie_name(state), path=_cookie_path(settings))
    return response


@oauth_router.post(
    "/exchange-code",
    dependencies=[AuthRateLimit],
    responses={400: _error, 422: _error, 429: _error},
)
async def exchange_code(
    body: ExchangeCodeRequest, db: DbDep, settings: SettingsDep
) -> TokenResponse:
    """Trade the one-time code from the app callback for tokens (works exactly once).

    A code started with a `code_challenge` needs its `code_verifier`; a missing or wrong one is
    `invalid_code` and spends the code.
    """
    return await service.exchange_code(
        db, settings, body.code, body.client_type, body.device_label, body.code_verifier
    )


@oauth_router.post(
    "/link/google/start",
    responses={400: _error, 401: _error, 422: _error, 503: _error},
)
async def link_google_start(
    body: LinkStartRequest, caller: CallerDep, db: DbDep, settings: SettingsDep, google: GoogleDep
) -> LinkStartResponse:
    """Begin linking a Google account to the signed-in user; open the URL in a browser."""
    target = service.check_redirect_uri(settings, body.redirect_uri)
    challenge = service.check_app_pkce(
        settings, target, body.code_challenge, body.code_challenge_method
    )
    started = await service.start_flow(
        db,
        google,
        target,
        purpose=service.LINK,
        user_id=caller.user_id,
        app_code_challenge=challenge,
    )
    return LinkStartResponse(authorization_url=started.authorization_url)


@oauth_router.post(
    "/link/google/complete",
    responses={400: _error, 401: _error, 409: _error, 422: _error},
)
async def link_google_complete(
    body: LinkCompleteRequest, caller: CallerDep, db: DbDep
) -> UserPublic:
    """Finish linking with the code the app callback received; returns the updated user.

    As with `/auth/exchange-code`, a code started with a `code_challenge` needs its verifier.
    """
    user = await accounts.get_user(db, caller.user_id)
    await service.complete_link(db, user, body.code, body.code_verifier)
    return await accounts.user_public(db, user)


def _cookie_path(settings: Settings) -> str:
    """The callback's path as the browser sees it (PUBLIC_BASE_URL may carry a prefix)."""
    return urlsplit(google_callback_url(settings)).path


def _error_page(request: Request, exc: ApiError) -> Response:
    """The error for a browser as a small page, for API clients as the usual JSON shape."""
    if "text/html" not in request.headers.get("accept", ""):
        raise exc
    title = "Sign-in could not continue"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - Papyrus</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto">
<h1>{title}</h1>
<p>{html.escape(exc.message)}</p>
<p><small>Error code: <code>{html.escape(exc.code)}</code></small></p>
<p>Close this window and start again from the Papyrus app.</p>
</body></html>
"""
    headers = {
        **_NO_STORE,
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    }
    return HTMLResponse(page, status_code=exc.status_code, headers=headers)
