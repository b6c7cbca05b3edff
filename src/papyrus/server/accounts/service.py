"""Accounts and sessions as plain async functions over a SQLAlchemy session."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from papyrus.server.accounts import tokens
from papyrus.server.accounts.models import AuthSession, RefreshToken, User
from papyrus.server.accounts.passwords import hash_password, verify_password
from papyrus.server.accounts.schemas import (
    ClientType,
    LinkedIdentity,
    SessionPublic,
    TokenResponse,
    UserPublic,
    UserUpdate,
)
from papyrus.server.config import Settings
from papyrus.server.errors import Conflict, NotFound, Unauthorized
from papyrus.server.oauth.models import OAuthIdentity

INVALID_CREDENTIALS = "Email or password is incorrect."
_LAST_SEEN_RESOLUTION = timedelta(seconds=60)


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    message = INVALID_CREDENTIALS


class InvalidRefreshToken(Unauthorized):
    code = "invalid_refresh_token"
    message = "The refresh token is invalid, expired or revoked; sign in again."


async def user_public(db: AsyncSession, user: User) -> UserPublic:
    public = UserPublic.model_validate(user)
    identities = await db.scalars(
        select(OAuthIdentity)
        .where(OAuthIdentity.user_id == user.id)
        .order_by(OAuthIdentity.created_at)
    )
    public.identities = [
        LinkedIdentity(provider=i.provider, email=i.email, linked_at=i.created_at)
        for i in identities
    ]
    return public


async def create_user(
    db: AsyncSession,
    *,
    email: str,
    display_name: str,
    password: str | None = None,
    email_verified: bool = False,
    avatar_url: str | None = None,
) -> User:
    """Inserts a user; 409 if the (normalised) email is taken, even under a race."""
    if await db.scalar(select(User.id).where(User.email == email)):
        raise Conflict("An account with this email already exists.", code="email_taken")
    user = User(
        email=email,
        display_name=display_name,
        password_hash=await hash_password(password) if password is not None else None,
        email_verified=email_verified,
        avatar_url=avatar_url,
    )
    db.add(user)
    try:
        await db.flush()
    except IntegrityError:
        await db.rollback()
        raise Conflict("An account with this email already exists.", code="email_taken") from None
    return user


async def start_session(
    db: AsyncSession,
    settings: Settings,
    user: User,
    client_type: ClientType,
    device_label: str | None,
) -> TokenResponse:
    """Opens a new session for `user` and commits; the shared tail of every sign-in."""
    auth_session = AuthSession(
        user_id=user.id, client_type=client_type.value, device_label=device_label
    )
    db.add(auth_session)
    await db.flush()
    refresh_token = _issue_refresh_token(db, settings, auth_session.id)
    await db.commit()
    return await _token_response(db, settings, user, auth_session.id, refresh_token)


async def login(db: AsyncSession, email: str, password: str) -> User:
    """The user for these credentials; every failure looks the same (body and timing)."""
    user = await db.scalar(select(User).where(User.email == email))
    ok = await verify_password(user.password_hash if user else None, password)
    if not ok or user is None:
        raise InvalidCredentials()
    return user


async def refresh(db: AsyncSession, settings: Settings, presented: str) -> TokenResponse:
    """Rotates a refresh token. Presenting an already-rotated one revokes its whole session."""
    now = datetime.now(UTC)
    row = await db.scalar(
        select(RefreshToken)
        .where(RefreshToken.token_hash == tokens.hash_token(presented))
        .with_for_update()  # concurrent refreshes of one token serialise here
    )
    if row is None:
        raise InvalidRefreshToken()
    auth_session = await db.get(AuthSession, row.session_id, with_for_update=True)
    if auth_session is None or auth_session.revoked_at is not None or row.expires_at <= now:
        raise InvalidRefreshToken()
    if row.used_at is not None:
        auth_session.revoked_at = now
        auth_session.revoked_reason = "refresh_token_reuse"
        await db.commit()
        raise InvalidRefreshToken()
    row.used_at = now
    auth_session.last_seen_at = now
    refresh_token = _issue_refresh_token(db, settings, auth_session.id)
    await db.commit()
    user = await db.get(User, auth_session.user_id)
    assert user is not None
    return await _token_response(db, settings, user, auth_session.id, refresh_token)


async def authenticate(
    db: AsyncSession, settings: Settings, token: str
) -> tuple[User, AuthSession]:
    """The user and live session behind an access token; revoked sessions fail at once."""
    claims = tokens.decode_access_token(settings.access_token_secret, token)
    auth_session = await db.get(AuthSession, claims.session_id)
    if (
        auth_session is None
        or auth_session.revoked_at is not None
        or auth_session.user_id != claims.user_id
    ):
        raise Unauthorized("The session has ended; sign in again.", code="session_revoked")
    user = await db.get(User, claims.user_id)
    if user is None:
        raise Unauthorized("The session has ended; sign in again.", code="session_revoked")
    now = datetime.now(UTC)
    if now - auth_session.last_seen_at > _LAST_SEEN_RESOLUTION:
        auth_session.last_seen_at = now
        await db.commit()
    return user, auth_session


async def revoke_sessions(
    db: AsyncSession, user_id: uuid.UUID, *, session_id: uuid.UUID | None = None, reason: str
) -> int:
    stmt = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if session_id is not None:
        stmt = stmt.where(AuthSession.id == session_id)
    result = await db.execute(stmt.values(revoked_at=datetime.now(UTC), revoked_reason=reason))
    await db.commit()
    return result.rowcount  # type: ignore[attr-defined]


async def revoke_one_session(db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    if not await revoke_sessions(db, user_id, session_id=session_id, reason="revoked_by_user"):
        raise NotFound("No active session with this id.", code="session_not_found")


async def list_sessions(
    db: AsyncSession, user_id: uuid.UUID, current_id: uuid.UUID
) -> list[SessionPublic]:
    rows = await db.scalars(
        select(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .order_by(AuthSession.created_at)
    )
    return [
        SessionPublic(
            id=s.id,
            client_type=ClientType(s.client_type),
            device_label=s.device_label,
            created_at=s.created_at,
            last_seen_at=s.last_seen_at,
            current=s.id == current_id,
        )
        for s in rows
    ]


async def update_user(db: AsyncSession, user: User, changes: UserUpdate) -> User:
    for field in changes.model_fields_set:
        value = getattr(changes, field)
        if field == "display_name" and value is None:
            continue  # the name is required; null means "leave it"
        setattr(user, field, value)
    await db.commit()
    await db.refresh(user)
    return user


def _issue_refresh_token(db: AsyncSession, settings: Settings, session_id: uuid.UUID) -> str:
    token = tokens.new_refresh_token()
    db.add(
        RefreshToken(
            session_id=session_id,
            token_hash=tokens.hash_token(token),
            expires_at=datetime.now(UTC) + timedelta(days=settings.REFRESH_TOKEN_TTL_DAYS),
        )
    )
    return token


async def _token_response(
    db: AsyncSession, settings: Settings, user: User, session_id: uuid.UUID, refresh_token: str
) -> TokenResponse:
    access = tokens.create_access_token(
        settings.access_token_secret, user.id, session_id, settings.ACCESS_TOKEN_TTL_SECONDS
    )
    return TokenResponse(
        access_token=access,
        refresh_token=refresh_token,
        expires_in=settings.ACCESS_TOKEN_TTL_SECONDS,
        user=await user_public(db, user),
    )
