"""Accounts and sessions as plain async functions over a SQLAlchemy session.

The hot paths (checking an access token, rotating a refresh token) are single SQL statements on
autocommit connections of the `hotdb` pool: one round trip each, no transaction left open.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from psycopg import AsyncConnection
from sqlalchemy import CursorResult, select, update
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
from papyrus.server.hotdb import Pool
from papyrus.server.oauth.models import OAuthIdentity

INVALID_CREDENTIALS = "Email or password is incorrect."
_LAST_SEEN_RESOLUTION = timedelta(seconds=60)


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    message = INVALID_CREDENTIALS


class InvalidRefreshToken(Unauthorized):
    code = "invalid_refresh_token"
    message = "The refresh token is invalid, expired or revoked; sign in again."


class AccountDeleted(Unauthorized):
    """The session's account no longer exists: the device should drop its copy of the data."""

    code = "account_deleted"
    message = "This account has been deleted."


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
    """Inserts a user; 409 if the (normalised) email is taken, even under a race.

    The password is hashed before the database is touched: no connection waits on Argon2.
    """
    password_hash = await hash_password(password) if password is not None else None
    if await db.scalar(select(User.id).where(User.email == email)):
        raise Conflict("An account with this email already exists.", code="email_taken")
    user = User(
        email=email,
        display_name=display_name,
        password_hash=password_hash,
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
    *,
    google: bool = False,
) -> TokenResponse:
    """Opens a new session for `user` and commits; the shared tail of every sign-in. `google`:
    the sign-in was a Google one (a recent one confirms sensitive changes, see `lifecycle`)."""
    auth_session = AuthSession(
        user_id=user.id,
        client_type=client_type.value,
        device_label=device_label,
        google_authenticated_at=datetime.now(UTC) if google else None,
    )
    db.add(auth_session)
    await db.flush()
    refresh_token = _issue_refresh_token(db, settings, auth_session.id)
    await db.commit()
    return await _token_response(db, settings, user, auth_session.id, refresh_token)


async def login(db: AsyncSession, email: str, password: str) -> User:
    """The user for these credentials; every failure looks the same (body and timing)."""
    user = await db.scalar(select(User).where(User.email == email))
    await db.commit()  # hand the connection back while Argon2 runs (and queues)
    ok = await verify_password(user.password_hash if user else None, password)
    if not ok or user is None:
        raise InvalidCredentials()
    return user


async def get_user(db: AsyncSession, user_id: uuid.UUID) -> User:
    user = await db.get(User, user_id)
    if user is None:  # deleted since the token was checked
        raise AccountDeleted()
    return user


# One statement rotates the token: it marks the presented token used (only if it is unused,
# unexpired and its session live), touches the session, inserts the successor and reads the
# user. A concurrent refresh of the same token waits on the token's row lock, then finds it
# used, claims nothing and falls through to the reuse check below.
_ROTATE_SQL = """
    WITH claimed AS (
        UPDATE refresh_tokens t SET used_at = now()
        FROM auth_sessions s
        WHERE t.token_hash = %(presented)s AND t.used_at IS NULL AND t.expires_at > now()
          AND s.id = t.session_id AND s.revoked_at IS NULL
        RETURNING t.session_id, s.user_id),
    touched AS (
        UPDATE auth_sessions a SET last_seen_at = now()
        FROM claimed WHERE a.id = claimed.session_id),
    issued AS (
        INSERT INTO refresh_tokens (id, session_id, token_hash, expires_at)
        SELECT %(new_id)s, claimed.session_id, %(new_hash)s, %(expires_at)s FROM claimed)
    SELECT claimed.session_id, u.id, u.email, u.email_verified,
           u.password_hash IS NOT NULL AS has_password, u.display_name, u.avatar_url,
           u.created_at,
           (SELECT json_agg(json_build_object(
                       'provider', i.provider, 'email', i.email, 'linked_at', i.created_at)
                    ORDER BY i.created_at)
            FROM oauth_identities i WHERE i.user_id = u.id) AS identities
    FROM claimed JOIN users u ON u.id = claimed.user_id
    """
_PRESENTED_SQL = """
    SELECT t.session_id, t.used_at, t.expires_at, s.revoked_at
    FROM refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id
    WHERE t.token_hash = %(presented)s
    """
_DELETED_ACCOUNT_SQL = (
    "SELECT 1 FROM deleted_account_tokens WHERE token_hash = %(presented)s AND expires_at > now()"
)
_REVOKE_FOR_REUSE_SQL = """
    UPDATE auth_sessions SET revoked_at = now(), revoked_reason = 'refresh_token_reuse'
    WHERE id = %(session_id)s AND revoked_at IS NULL
    """


async def refresh(pool: Pool, settings: Settings, presented: str) -> TokenResponse:
    """Rotates a refresh token. Presenting an already-rotated one revokes its whole session."""
    presented_hash = tokens.hash_token(presented)
    refresh_token = tokens.new_refresh_token()
    params = {
        "presented": presented_hash,
        "new_id": uuid.uuid4(),
        "new_hash": tokens.hash_token(refresh_token),
        "expires_at": datetime.now(UTC) + timedelta(days=settings.REFRESH_TOKEN_TTL_DAYS),
    }
    async with pool.connection() as conn:
        row = await (await conn.execute(_ROTATE_SQL, params)).fetchone()
        if row is None:
            await _refused_refresh(conn, presented_hash)
    assert row is not None
    session_id, *user_columns, identities = row
    user = UserPublic(
        **dict(zip(_USER_COLUMNS, user_columns, strict=True)),
        identities=json.loads(identities) if isinstance(identities, str) else identities or [],
    )
    return _tokens(settings, user, session_id, refresh_token)


_USER_COLUMNS = (
    "id",
    "email",
    "email_verified",
    "has_password",
    "display_name",
    "avatar_url",
    "created_at",
)


async def _refused_refresh(conn: AsyncConnection, presented_hash: bytes) -> None:
    """Why the rotation claimed nothing; an already-used token revokes its session, and a token
    whose account was deleted says so."""
    params = {"presented": presented_hash}
    found = await (await conn.execute(_PRESENTED_SQL, params)).fetchone()
    if found is not None:
        session_id, used_at, expires_at, revoked_at = found
        if revoked_at is None and expires_at > datetime.now(UTC) and used_at is not None:
            await conn.execute(_REVOKE_FOR_REUSE_SQL, {"session_id": session_id})
    elif await (await conn.execute(_DELETED_ACCOUNT_SQL, params)).fetchone():
        raise AccountDeleted()
    raise InvalidRefreshToken()


_LIVE_SESSION_SQL = (
    "SELECT last_seen_at FROM auth_sessions"
    " WHERE id = %(session_id)s AND user_id = %(user_id)s AND revoked_at IS NULL"
)
_TOUCH_SESSION_SQL = "UPDATE auth_sessions SET last_seen_at = now() WHERE id = %(session_id)s"
_USER_EXISTS_SQL = "SELECT 1 FROM users WHERE id = %(user_id)s"


async def authenticate(pool: Pool, settings: Settings, token: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The user and live session behind an access token; revoked sessions fail at once.

    A session's user exists while the session does (deleting a user deletes its sessions).
    """
    claims = tokens.decode_access_token(settings.access_token_secret, token)
    params = {"session_id": claims.session_id, "user_id": claims.user_id}
    async with pool.connection() as conn:
        row = await (await conn.execute(_LIVE_SESSION_SQL, params)).fetchone()
        if row is None:
            # A validly signed token whose user is gone: user ids are never reused.
            if await (await conn.execute(_USER_EXISTS_SQL, params)).fetchone() is None:
                raise AccountDeleted()
            raise Unauthorized("The session has ended; sign in again.", code="session_revoked")
        if datetime.now(UTC) - row[0] > _LAST_SEEN_RESOLUTION:
            await conn.execute(_TOUCH_SESSION_SQL, params)
    return claims.user_id, claims.session_id


async def revoke_sessions(
    db: AsyncSession, user_id: uuid.UUID, *, session_id: uuid.UUID | None = None, reason: str
) -> int:
    stmt = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if session_id is not None:
        stmt = stmt.where(AuthSession.id == session_id)
    # An UPDATE's result is a CursorResult; `execute` is typed for SELECTs.
    result = cast(
        "CursorResult[Any]",
        await db.execute(stmt.values(revoked_at=datetime.now(UTC), revoked_reason=reason)),
    )
    await db.commit()
    return result.rowcount


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
    return _tokens(settings, await user_public(db, user), session_id, refresh_token)


def _tokens(
    settings: Settings, user: UserPublic, session_id: uuid.UUID, refresh_token: str
) -> TokenResponse:
    access = tokens.create_access_token(
        settings.access_token_secret, user.id, session_id, settings.ACCESS_TOKEN_TTL_SECONDS
    )
    return TokenResponse(
        access_token=access,
        refresh_token=refresh_token,
        expires_in=settings.ACCESS_TOKEN_TTL_SECONDS,
        user=user,
    )
