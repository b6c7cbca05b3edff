"""The browser sign-in flow as plain async functions over a SQLAlchemy session.

Start stores a single-use state (hash only) and sends the browser to the provider; the callback
consumes it, verifies the provider's answer and hands the app a one-time Papyrus code (hash
only), which the app exchanges for ordinary tokens. Until the state is validated nothing is
redirected anywhere: an attacker-chosen redirect URI can never receive a code or an error.

Apps add PKCE of their own (RFC 7636, S256) between themselves and Papyrus: a challenge at start,
carried from the state onto the one-time code, and the verifier at exchange. A code received on a
custom URL scheme can be intercepted by another app registered for that scheme (RFC 8252 8.1);
without the verifier it is worthless.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit

from authlib.common.security import generate_token
from sqlalchemy import Row, Update, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from papyrus.server.accounts import service as accounts
from papyrus.server.accounts.models import AuthSession, User
from papyrus.server.accounts.schemas import ClientType, TokenResponse
from papyrus.server.accounts.tokens import hash_token
from papyrus.server.config import Settings
from papyrus.server.errors import BadRequest, Conflict, ServiceUnavailable
from papyrus.server.oauth.models import OAuthCode, OAuthIdentity, OAuthState
from papyrus.server.oauth.provider import OidcProvider, ProviderError, VerifiedIdentity

log = logging.getLogger(__name__)

SIGN_IN = "sign_in"
LINK = "link"
STATE_TTL = timedelta(minutes=10)
CODE_TTL = timedelta(minutes=5)
APP_CALLBACK_PATH = "/auth/callback"
_MAX_PARAM_LENGTH = 2048
S256 = "S256"
# BASE64URL(SHA256(verifier)) without padding is always 43 characters (RFC 7636 4.2).
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_CODE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 4.1


class InvalidRedirectUri(BadRequest):
    code = "invalid_redirect_uri"
    message = "redirect_uri is not an allowed Papyrus app callback."


class InvalidState(BadRequest):
    code = "invalid_state"
    message = "This sign-in attempt is unknown, expired or already used; start again from the app."


class BrowserMismatch(BadRequest):
    code = "browser_mismatch"
    message = (
        "This sign-in was started in another browser (or its cookie was blocked); "
        "start again from the app."
    )


class InvalidCode(BadRequest):
    code = "invalid_code"
    message = "The code is invalid, expired or already used; sign in again."


class InvalidCodeChallenge(BadRequest):
    code = "invalid_code_challenge"
    message = (
        "code_challenge must be BASE64URL(SHA256(code_verifier)) without padding: "
        "43 characters of A-Z, a-z, 0-9, '-' and '_'."
    )


class UnsupportedCodeChallengeMethod(BadRequest):
    code = "unsupported_code_challenge_method"
    message = 'code_challenge_method must be "S256"; "plain" (or leaving it out) is not accepted.'


class CodeChallengeRequired(BadRequest):
    code = "code_challenge_required"
    message = (
        "An app receiving the code on a custom URL scheme must send a PKCE code_challenge "
        "(code_challenge_method=S256)."
    )


class OAuthNotConfigured(ServiceUnavailable):
    code = "oauth_not_configured"
    message = (
        "Google sign-in is not configured on this server "
        "(set GOOGLE_OAUTH_CLIENT_ID and GOOGLE_OAUTH_CLIENT_SECRET)."
    )


class ProviderUnavailable(ServiceUnavailable):
    code = "provider_unavailable"
    message = "Google sign-in is temporarily unavailable; try again later."


class IdentityTaken(Conflict):
    code = "identity_taken"
    message = "This Google account is already linked to another Papyrus account."


def allowed_redirect_uris(settings: Settings) -> frozenset[str]:
    """The exact app callbacks a code may be sent to: native apps plus each web origin's."""
    web = (f"{origin}{APP_CALLBACK_PATH}" for origin in settings.OAUTH_WEB_ORIGINS)
    return frozenset([*settings.OAUTH_APP_REDIRECT_URIS, *web])


def check_redirect_uri(settings: Settings, redirect_uri: str | None) -> str:
    """Exact string match only: no prefix, path or query tolerance to be tricked by."""
    if not redirect_uri or redirect_uri not in allowed_redirect_uris(settings):
        raise InvalidRedirectUri()
    return redirect_uri


def check_app_pkce(
    settings: Settings, redirect_uri: str, challenge: str | None, method: str | None
) -> str | None:
    """The app's S256 challenge to bind the one-time code to, or None if it sent none.

    Only S256: `plain` would put the verifier itself in the browser's URL, where whoever
    intercepts the code sees it too (and RFC 7636 makes a missing method mean `plain`). A
    custom-scheme callback without a challenge is refused unless the operator turned that off.
    """
    if challenge is None:
        if method is not None:
            raise InvalidCodeChallenge("code_challenge_method was sent without code_challenge.")
        custom_scheme = urlsplit(redirect_uri).scheme.lower() not in ("http", "https")
        if custom_scheme and settings.OAUTH_REQUIRE_APP_PKCE_FOR_CUSTOM_SCHEMES:
            raise CodeChallengeRequired()
        return None
    if method != S256:
        raise UnsupportedCodeChallengeMethod()
    if not _S256_CHALLENGE.fullmatch(challenge) or not _canonical_base64url(challenge):
        raise InvalidCodeChallenge()
    return challenge


def s256_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _canonical_base64url(value: str) -> bool:
    """43 characters carry 258 bits for 256: the spare bits must be zero, as any encoder writes
    them, or no verifier could ever produce this challenge."""
    decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return base64.urlsafe_b64encode(decoded).rstrip(b"=").decode("ascii") == value


def _app_pkce_failure(challenge: str | None, verifier: str | None) -> str | None:
    """Why `verifier` does not unlock a code minted with `challenge`, or None if it does."""
    if challenge is None:
        # RFC 9700 2.1.1: a verifier for a code started without a challenge is refused. The app
        # that sent it did send a challenge, so this code is not from its own start (injected).
        return None if verifier is None else "code_verifier for a code started without PKCE"
    if verifier is None:
        return "code_verifier missing"
    if not _CODE_VERIFIER.fullmatch(verifier):
        return "code_verifier malformed"
    expected = s256_challenge(verifier).encode("ascii")
    if not hmac.compare_digest(expected, challenge.encode("ascii")):
        return "code_verifier does not match"
    return None


@dataclass(frozen=True)
class StartedFlow:
    authorization_url: str
    # Sign-in only: a cookie for the browser that opened the start URL (name, value).
    browser_cookie: tuple[str, str] | None


async def start_flow(
    db: AsyncSession,
    provider: OidcProvider,
    redirect_uri: str,
    *,
    purpose: str,
    user_id: uuid.UUID | None = None,
    app_code_challenge: str | None = None,
) -> StartedFlow:
    """Stores a fresh state and returns the provider URL to send the browser to.

    A sign-in is also bound to the browser that opened the start URL: the callback must come
    from that browser, so nobody can push their own sign-in into another person's app by
    getting them to open a callback URL (login CSRF). Link flows start from an API call, not a
    browser, and are instead bound to the signed-in user. `app_code_challenge` (already checked
    by `check_app_pkce`) goes onto the one-time code the callback mints.
    """
    state = secrets.token_urlsafe(32)
    binding = secrets.token_urlsafe(32) if purpose == SIGN_IN else None
    nonce = secrets.token_urlsafe(32)
    code_verifier = generate_token(64)  # RFC 7636: 43-128 unreserved characters
    try:
        url = await provider.authorization_url(
            state=state, nonce=nonce, code_verifier=code_verifier
        )
    except ProviderError as exc:
        log.warning("oauth start: %s unavailable (%s)", provider.name, exc)
        raise ProviderUnavailable() from None
    db.add(
        OAuthState(
            state_hash=hash_token(state),
            provider=provider.name,
            purpose=purpose,
            user_id=user_id,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            nonce=nonce,
            browser_binding_hash=hash_token(binding) if binding else None,
            app_code_challenge=app_code_challenge,
            expires_at=datetime.now(UTC) + STATE_TTL,
        )
    )
    if random.random() < 0.01:
        await _sweep(db)
    await db.commit()
    cookie = (browser_cookie_name(state), binding) if binding else None
    return StartedFlow(url, cookie)


def browser_cookie_name(state: str) -> str:
    """One cookie per flow, so two sign-ins started in one browser do not clash."""
    return f"papyrus_oauth_{hashlib.sha256(state.encode()).hexdigest()[:16]}"


async def finish_callback(
    db: AsyncSession,
    settings: Settings,
    provider: OidcProvider,
    *,
    state: str | None,
    code: str | None,
    error: str | None,
    iss: str | None,
    cookies: Mapping[str, str],
) -> str:
    """Where to send the browser back to: the app callback with `code` or `error`.

    Raises (and so redirects nowhere) only while the state is not yet validated.
    """
    flow = await _consume_state(db, provider.name, state)
    if flow.browser_binding_hash is not None:
        assert state is not None
        cookie = cookies.get(browser_cookie_name(state))
        if not cookie or not hmac.compare_digest(hash_token(cookie), flow.browser_binding_hash):
            log.warning("oauth callback refused: opened in another browser than the start URL")
            raise BrowserMismatch()
    redirect_uri = check_redirect_uri(settings, flow.redirect_uri)  # the allowlist may shrink
    try:
        if error:
            reason = "access_denied" if error == "access_denied" else "provider_error"
            raise ProviderError(reason, f"provider answered error={error[:64]!r}")
        if iss and iss.rstrip("/") not in provider.accepted_issuers:
            raise ProviderError("invalid_issuer", "callback iss does not match")  # mix-up
        if not code or len(code) > _MAX_PARAM_LENGTH:
            raise ProviderError("invalid_request", "callback without code")
        identity = await provider.fetch_identity(
            code=code, code_verifier=flow.code_verifier, nonce=flow.nonce
        )
        if flow.purpose == LINK:
            assert flow.user_id is not None
            user_id = flow.user_id
        else:
            user_id = await _sign_in_user(db, provider.name, identity)
        app_code = await _mint_code(
            db, flow.purpose, user_id, provider.name, identity, flow.app_code_challenge
        )
    except ProviderError as exc:
        await db.rollback()
        log.warning("oauth callback refused: %s (%s)", exc.code, exc)
        return _with_query(redirect_uri, error=exc.code)
    except Exception:
        await db.rollback()
        log.exception("oauth callback failed")
        return _with_query(redirect_uri, error="server_error")
    return _with_query(redirect_uri, code=app_code)


async def exchange_code(
    db: AsyncSession,
    settings: Settings,
    code: str,
    client_type: ClientType,
    device_label: str | None,
    code_verifier: str | None = None,
) -> TokenResponse:
    """Spends a sign-in code (exactly once, even under concurrent exchanges) for tokens."""
    spent = await _spend_code(db, _spend_statement(code, SIGN_IN), code_verifier)
    user = await db.get(User, spent.user_id)
    if user is None:
        raise InvalidCode()
    return await accounts.start_session(db, settings, user, client_type, device_label, google=True)


async def complete_link(
    db: AsyncSession, user: User, code: str, code_verifier: str | None = None
) -> None:
    """Links the identity behind a link code to `user`, who must be the one who started it."""
    statement = _spend_statement(code, LINK).where(OAuthCode.user_id == user.id)
    row = await _spend_code(db, statement, code_verifier)
    await db.commit()  # the code is spent whatever happens next
    owner = await db.scalar(
        select(OAuthIdentity.user_id).where(
            OAuthIdentity.provider == row.provider, OAuthIdentity.subject == row.subject
        )
    )
    if owner == user.id:
        return
    if owner is not None:
        raise IdentityTaken()
    db.add(
        OAuthIdentity(user_id=user.id, provider=row.provider, subject=row.subject, email=row.email)
    )
    try:
        await db.commit()
    except IntegrityError:  # linked elsewhere in the meantime
        await db.rollback()
        raise IdentityTaken() from None


async def _consume_state(db: AsyncSession, provider: str, state: str | None) -> OAuthState:
    """Deletes the state as it is read, so a second callback with it finds nothing."""
    if not state or len(state) > _MAX_PARAM_LENGTH:
        raise InvalidState()
    flow: OAuthState | None = await db.scalar(
        delete(OAuthState).where(OAuthState.state_hash == hash_token(state)).returning(OAuthState)
    )
    await db.commit()
    if flow is None or flow.provider != provider or flow.expires_at <= datetime.now(UTC):
        raise InvalidState()
    return flow


async def _sign_in_user(db: AsyncSession, provider: str, identity: VerifiedIdentity) -> uuid.UUID:
    """The user for this identity: linked before, else same verified email, else a new one."""
    for attempt in range(2):
        try:
            return await _find_or_create_user(db, provider, identity)
        except (Conflict, IntegrityError):
            # A concurrent first sign-in of the same person won; the retry finds its user.
            await db.rollback()
            if attempt:
                raise ProviderError("account_conflict", "concurrent sign-in kept failing") from None
    raise AssertionError("unreachable")


async def _find_or_create_user(
    db: AsyncSession, provider: str, identity: VerifiedIdentity
) -> uuid.UUID:
    email = _normalise_email(identity.email)
    linked = await db.scalar(
        select(OAuthIdentity).where(
            OAuthIdentity.provider == provider, OAuthIdentity.subject == identity.subject
        )
    )
    if linked is not None:
        if email and linked.email != email:
            linked.email = email
        return linked.user_id
    if email is None:
        raise ProviderError("email_missing", "id token has no usable email")
    if not identity.email_verified:
        # Neither link nor create: an unverified address may belong to someone else, and a
        # user created under it could later be merged with its real owner's Google account.
        raise ProviderError("email_unverified", "provider did not verify the email")
    user = await db.scalar(select(User).where(User.email == email))
    if user is not None and not user.email_verified:
        await _evict_unproven_owner(db, user)
    if user is None:
        user = await accounts.create_user(
            db,
            email=email,
            display_name=_display_name(identity, email),
            password=None,
            email_verified=True,
            avatar_url=_avatar_url(identity.picture),
        )
    db.add(OAuthIdentity(user_id=user.id, provider=provider, subject=identity.subject, email=email))
    await db.flush()
    return user.id


async def _evict_unproven_owner(db: AsyncSession, user: User) -> None:
    """Linking proves the Google owner holds this address; the account's password never did.

    Whoever set that password (possibly someone who registered another person's email first)
    loses it and every session, so the proven owner is the only one left holding the account.
    """
    user.password_hash = None
    user.email_verified = True
    await db.execute(
        update(AuthSession)
        .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=func.now(), revoked_reason="email_owner_linked")
    )


async def _mint_code(
    db: AsyncSession,
    purpose: str,
    user_id: uuid.UUID,
    provider: str,
    identity: VerifiedIdentity,
    app_code_challenge: str | None,
) -> str:
    code = secrets.token_urlsafe(32)
    db.add(
        OAuthCode(
            code_hash=hash_token(code),
            purpose=purpose,
            user_id=user_id,
            provider=provider,
            subject=identity.subject,
            email=_normalise_email(identity.email),
            app_code_challenge=app_code_challenge,
            expires_at=datetime.now(UTC) + CODE_TTL,
        )
    )
    await db.commit()
    return code


def _spend_statement(code: str, purpose: str) -> Update:
    # One UPDATE with the conditions in its WHERE: a concurrent second exchange waits on the
    # row lock, then re-checks `used_at` and matches nothing.
    return (
        update(OAuthCode)
        .where(
            OAuthCode.code_hash == hash_token(code),
            OAuthCode.purpose == purpose,
            OAuthCode.used_at.is_(None),
            OAuthCode.expires_at > func.now(),
        )
        .values(used_at=func.now())
    )


async def _spend_code(
    db: AsyncSession, statement: Update, code_verifier: str | None
) -> Row[uuid.UUID, str, str, str | None, str | None]:
    """Marks the code used, then checks the app's PKCE verifier.

    A code that fails the check stays spent (committed before answering): whoever holds an
    intercepted code gets one guess, not many. The answer is the same `invalid_code` as for an
    unknown code, so a failure reveals nothing about the code.
    """
    row = (
        await db.execute(
            statement.returning(
                OAuthCode.user_id,
                OAuthCode.provider,
                OAuthCode.subject,
                OAuthCode.email,
                OAuthCode.app_code_challenge,
            )
        )
    ).first()
    if row is None:
        await db.rollback()
        raise InvalidCode()
    failure = _app_pkce_failure(row.app_code_challenge, code_verifier)
    if failure is not None:
        await db.commit()
        log.warning("one-time code refused and burnt: %s", failure)
        raise InvalidCode()
    return row


async def _sweep(db: AsyncSession) -> None:
    """Occasional cleanup of flows nobody finished and codes long spent or expired."""
    day_ago = datetime.now(UTC) - timedelta(days=1)
    await db.execute(delete(OAuthState).where(OAuthState.expires_at < datetime.now(UTC)))
    await db.execute(
        delete(OAuthCode).where(or_(OAuthCode.expires_at < day_ago, OAuthCode.used_at < day_ago))
    )


def _with_query(uri: str, **params: str) -> str:
    # Allowlisted URIs carry no query or fragment (checked when settings load).
    return f"{uri}?{urlencode(params)}"


def _normalise_email(email: str | None) -> str | None:
    if not email:
        return None
    email = email.strip().lower()
    if len(email) > 254 or email.count("@") != 1 or email.startswith("@") or email.endswith("@"):
        return None
    return email


def _display_name(identity: VerifiedIdentity, email: str) -> str:
    name = (identity.name or "").strip() or email.split("@")[0]
    return name[:100] or "Reader"


def _avatar_url(picture: str | None) -> str | None:
    if picture and picture.startswith("https://") and len(picture) <= 2048 and " " not in picture:
        return picture
    return None
