"""The account lifecycle as plain async functions over a SQLAlchemy session.

Every mailed link carries a single-use token (256 random bits) stored only as its SHA-256 in
`account_tokens`, together with the address it was sent to; using it deletes it. A message is
queued in the same transaction as its token (`mail.outbox.enqueue`), so both exist or neither;
the caller wakes the sender once the transaction has committed. Nothing here waits on a mail
server, and no connection is held while Argon2 runs.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from papyrus.server.accounts import ratelimit
from papyrus.server.accounts import service as accounts
from papyrus.server.accounts.models import AuthSession, User
from papyrus.server.accounts.passwords import hash_password, verify_password
from papyrus.server.accounts.schemas import ClientType, TokenResponse
from papyrus.server.accounts.tokens import hash_token, new_refresh_token
from papyrus.server.config import Settings
from papyrus.server.errors import ApiError, BadRequest, Conflict
from papyrus.server.hotdb import Pool
from papyrus.server.lifecycle import mails
from papyrus.server.lifecycle.limits import hit_mail_limit, mail_window
from papyrus.server.lifecycle.models import (
    CHANGE_EMAIL,
    RESET_PASSWORD,
    VERIFY_EMAIL,
    AccountToken,
)
from papyrus.server.mail.outbox import enqueue

log = logging.getLogger(__name__)

VERIFY_TTL = timedelta(hours=24)
RESET_TTL = timedelta(minutes=30)
CHANGE_EMAIL_TTL = timedelta(hours=24)


class InvalidToken(BadRequest):
    code = "invalid_token"
    message = "This link is invalid, expired or already used; ask for a new one."


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class WrongPassword(Forbidden):
    # 403, not 401: the session is fine, a client must not take this for a sign-out.
    code = "invalid_password"
    message = "The password is incorrect."


class ReauthenticationRequired(Forbidden):
    code = "reauthentication_required"
    message = (
        "Confirm with the account's password, or sign in with Google again on this device "
        "and retry within a few minutes."
    )


class NoPassword(BadRequest):
    code = "no_password"
    message = (
        "This account has no password yet (it signs in with Google); set one with a reset "
        "link: POST /v1/auth/password/forgot."
    )


class EmailAlreadyVerified(Conflict):
    code = "email_already_verified"
    message = "This address is already confirmed."


def new_token() -> tuple[str, bytes]:
    """A link's secret and the hash that is stored."""
    token = new_refresh_token()
    return token, hash_token(token)


@dataclass(frozen=True)
class _Spent:
    user_id: uuid.UUID
    email: str


async def _spend(db: AsyncSession, token: str, purpose: str) -> _Spent:
    """Deletes the token as it is read (a concurrent second use waits on the row, then finds
    nothing); an unknown, expired or foreign-purpose token is `InvalidToken`, all alike."""
    row = (
        await db.execute(
            delete(AccountToken)
            .where(AccountToken.token_hash == hash_token(token), AccountToken.purpose == purpose)
            .returning(AccountToken.user_id, AccountToken.email, AccountToken.expires_at)
        )
    ).first()
    if row is None or row.expires_at <= datetime.now(UTC):
        await db.commit()  # an expired token is gone for good
        raise InvalidToken()
    return _Spent(row.user_id, row.email)


def _add_token(
    db: AsyncSession, user_id: uuid.UUID, purpose: str, email: str, ttl: timedelta
) -> tuple[str, datetime]:
    token, token_hash = new_token()
    expires_at = datetime.now(UTC) + ttl
    db.add(
        AccountToken(
            token_hash=token_hash,
            user_id=user_id,
            purpose=purpose,
            email=email,
            expires_at=expires_at,
        )
    )
    return token, expires_at


async def _void(db: AsyncSession, user_id: uuid.UUID, purpose: str) -> None:
    """A newer link voids the older ones of its kind."""
    await db.execute(
        delete(AccountToken).where(AccountToken.user_id == user_id, AccountToken.purpose == purpose)
    )


# --- email verification ----------------------------------------------------------------------


async def queue_verification(db: AsyncSession, settings: Settings, user: User) -> None:
    """Adds a verification link and its mail to `db`'s transaction (the caller commits)."""
    await _void(db, user.id, VERIFY_EMAIL)
    token, expires_at = _add_token(db, user.id, VERIFY_EMAIL, user.email, VERIFY_TTL)
    hours = int(VERIFY_TTL.total_seconds() // 3600)
    enqueue(
        db,
        mails.verify_email(settings, token, hours),
        user.email,
        user_id=user.id,
        expires_at=expires_at,
    )


async def verify_email(db: AsyncSession, token: str) -> User:
    """Marks the address the link was sent to as proven, if it is still the account's."""
    spent = await _spend(db, token, VERIFY_EMAIL)
    user = await db.get(User, spent.user_id, with_for_update=True)
    if user is None or user.email != spent.email:
        await db.commit()
        raise InvalidToken()
    user.email_verified = True
    await db.commit()
    return user


async def resend_verification(
    db: AsyncSession, settings: Settings, limits: Pool, user_id: uuid.UUID
) -> None:
    user = await accounts.get_user(db, user_id)
    if user.email_verified:
        raise EmailAlreadyVerified()
    await hit_mail_limit(limits, settings, user.email)
    await queue_verification(db, settings, user)
    await db.commit()


# --- forgotten password ----------------------------------------------------------------------

# One statement whether or not an account uses the address, and one commit. It counts the
# request against the address's hourly budget (`rate_limit_counters`, as `hit_mail_limit` does)
# and, within budget, inserts the token and the message for the rows `target` finds, which may
# be none. Counting here rather than in a transaction of its own matters for timing: every such
# transaction writes WAL, so its commit waits for the disk whether or not an account exists. A
# transaction that wrote nothing would commit without that wait and answer measurably sooner
# (bench/forgot_password.py).
_FORGOT_SQL = text(
    """
    WITH hit AS (INSERT INTO rate_limit_counters AS c (key, window_start, count)
                 VALUES (:limit_key, :window_start, 1)
                 ON CONFLICT (key, window_start) DO UPDATE SET count = c.count + 1
                 RETURNING c.count),
    target AS (SELECT u.id, u.email FROM users u, hit
               WHERE u.email = :email AND hit.count <= :limit),
    voided AS (DELETE FROM account_tokens t USING target
               WHERE t.user_id = target.id AND t.purpose = :purpose),
    token AS (INSERT INTO account_tokens (id, token_hash, user_id, purpose, email, expires_at)
              SELECT :token_id, :token_hash, id, :purpose, email, :expires_at FROM target),
    mail AS (INSERT INTO mail_outbox (user_id, kind, recipient, subject, body_text, body_html,
                                      expires_at)
             SELECT id, :kind, email, :subject, :body_text, :body_html, :expires_at FROM target)
    SELECT count FROM hit
    """
)


async def forgot_password(db: AsyncSession, settings: Settings, email: str) -> None:
    """Queues a reset link for `email` if an account uses it; looks and costs the same if not."""
    window = mail_window(settings, email)
    token, token_hash = new_token()
    mail = mails.reset_password(settings, token, int(RESET_TTL.total_seconds() // 60))
    count = await db.scalar(
        _FORGOT_SQL,
        {
            "limit_key": window.key,
            "window_start": window.start,
            "limit": settings.RATE_LIMIT_MAIL_PER_ADDRESS_PER_HOUR,
            "email": email,
            "purpose": RESET_PASSWORD,
            "token_id": uuid.uuid4(),
            "token_hash": token_hash,
            "expires_at": datetime.now(UTC) + RESET_TTL,
            "kind": mail.kind,
            "subject": mail.subject,
            "body_text": mail.text,
            "body_html": mail.html,
        },
    )
    await db.commit()
    window.refuse_if_over(count, settings)


async def reset_password(
    db: AsyncSession,
    settings: Settings,
    limits: Pool,
    token: str,
    new_password: str,
    client_type: ClientType,
    device_label: str | None,
) -> TokenResponse:
    """Sets the password the link's account signs in with (a first one for a Google-only
    account), proves its address, ends every session, and signs this device in."""
    new_hash = await hash_password(new_password)  # before any connection is taken
    spent = await _spend(db, token, RESET_PASSWORD)
    user = await db.get(User, spent.user_id, with_for_update=True)
    if user is None or user.email != spent.email:
        await db.commit()
        raise InvalidToken()
    user.password_hash = new_hash
    user.email_verified = True  # the link reached the address
    await _void(db, user.id, RESET_PASSWORD)
    await _revoke(db, user.id, reason="password_reset")
    # Failures (and any lockout) recorded against the address are over: its owner is back.
    await db.execute(text("DELETE FROM login_failures WHERE email = :email"), {"email": user.email})
    return await accounts.start_session(db, settings, user, client_type, device_label)


# --- signed-in changes: password, address, deletion --------------------------------------------


async def _revoke(
    db: AsyncSession, user_id: uuid.UUID, *, reason: str, keep: uuid.UUID | None = None
) -> int:
    statement = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if keep is not None:
        statement = statement.where(AuthSession.id != keep)
    result = await db.execute(statement.values(revoked_at=datetime.now(UTC), revoked_reason=reason))
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


@dataclass(frozen=True)
class Proof:
    """Who asks, from where: what a password check needs for the sign-in failure limits."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    ip: str


async def _check_password(
    settings: Settings, limits: Pool, proof: Proof, user: User, password: str
) -> None:
    """Counts like a sign-in: a wrong password is a failed login for the address and source,
    and a locked-out source is refused before the password is looked at."""
    await ratelimit.check_login_failures(
        limits,
        user.email,
        proof.ip,
        per_source=settings.RATE_LIMIT_LOGIN_FAILURES_PER_SOURCE,
        per_email=settings.RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL,
        window_seconds=settings.RATE_LIMIT_LOGIN_FAILURE_WINDOW_SECONDS,
        known_days=settings.RATE_LIMIT_LOGIN_KNOWN_SOURCE_DAYS,
    )
    if not await verify_password(user.password_hash, password):
        await ratelimit.record_login_failure(
            limits, user.email, proof.ip, settings.RATE_LIMIT_LOGIN_KNOWN_SOURCE_DAYS
        )
        raise WrongPassword()


async def recent_proof(
    db: AsyncSession, settings: Settings, limits: Pool, proof: Proof, password: str | None
) -> User:
    """The caller's user, once they proved it is them just now: the account's password, or a
    Google sign-in of this very session within RECENT_AUTH_SECONDS. A stolen access or refresh
    token alone proves neither."""
    user = await accounts.get_user(db, proof.user_id)
    if password is not None:
        if user.password_hash is None:
            raise ReauthenticationRequired()
        await db.commit()  # no connection held while Argon2 runs
        await _check_password(settings, limits, proof, user, password)
        return user
    signed_in_at = await db.scalar(
        select(AuthSession.google_authenticated_at).where(AuthSession.id == proof.session_id)
    )
    recent = timedelta(seconds=settings.RECENT_AUTH_SECONDS)
    if signed_in_at is None or datetime.now(UTC) - signed_in_at > recent:
        raise ReauthenticationRequired()
    return user


async def change_password(
    db: AsyncSession,
    settings: Settings,
    limits: Pool,
    proof: Proof,
    current_password: str,
    new_password: str,
) -> int:
    """Replaces the password; this session stays, every other one ends. Returns how many."""
    user = await accounts.get_user(db, proof.user_id)
    old_hash = user.password_hash
    if old_hash is None:
        raise NoPassword()
    await db.commit()
    await _check_password(settings, limits, proof, user, current_password)
    new_hash = await hash_password(new_password)
    # Compare-and-set: a change that raced this one is not silently overwritten.
    changed = await db.execute(
        update(User)
        .where(User.id == user.id, User.password_hash == old_hash)
        .values(password_hash=new_hash)
    )
    assert isinstance(changed, CursorResult)
    if changed.rowcount != 1:
        await db.rollback()
        raise Conflict(
            "The password was changed meanwhile; sign in again.", code="password_changed"
        )
    revoked = await _revoke(db, user.id, reason="password_changed", keep=proof.session_id)
    enqueue(db, mails.password_changed(settings), user.email, user_id=user.id)
    await db.commit()
    return revoked


async def _email_taken(db: AsyncSession, email: str) -> bool:
    return await db.scalar(select(User.id).where(User.email == email)) is not None


async def change_email(
    db: AsyncSession,
    settings: Settings,
    limits: Pool,
    proof: Proof,
    new_email: str,
    password: str | None,
) -> None:
    """Mails a confirmation link to the new address; nothing changes until it is used."""
    user = await recent_proof(db, settings, limits, proof, password)
    if new_email == user.email:
        raise BadRequest("That is already the account's address.", code="same_email")
    if await _email_taken(db, new_email):
        raise Conflict("An account with this email already exists.", code="email_taken")
    await hit_mail_limit(limits, settings, new_email)
    await _void(db, user.id, CHANGE_EMAIL)
    token, expires_at = _add_token(db, user.id, CHANGE_EMAIL, new_email, CHANGE_EMAIL_TTL)
    hours = int(CHANGE_EMAIL_TTL.total_seconds() // 3600)
    mail = mails.confirm_new_email(settings, token, new_email, hours)
    enqueue(db, mail, new_email, user_id=user.id, expires_at=expires_at)
    await db.commit()


async def confirm_email_change(db: AsyncSession, settings: Settings, token: str) -> User:
    """Makes the link's address the account's (proven), and tells the old address."""
    spent = await _spend(db, token, CHANGE_EMAIL)
    user = await db.get(User, spent.user_id, with_for_update=True)
    if user is None:
        await db.commit()
        raise InvalidToken()
    old = user.email
    if old == spent.email:
        await db.commit()
        return user
    taken = Conflict("An account with this email already exists.", code="email_taken")
    if await _email_taken(db, spent.email):
        await db.commit()  # the link is spent
        raise taken
    user.email = spent.email
    user.email_verified = True
    await _void(db, user.id, VERIFY_EMAIL)
    # What the sign-in limits keep under the old address moves with the account (known
    # sources) or ends (failures), so nothing stays behind under an address it gave up.
    params = {"old": old, "new": spent.email}
    await db.execute(text("DELETE FROM login_known_sources WHERE email = :new"), params)
    await db.execute(text("UPDATE login_known_sources SET email = :new WHERE email = :old"), params)
    await db.execute(text("DELETE FROM login_failures WHERE email = :old"), params)
    enqueue(db, mails.email_changed(settings, spent.email), old, user_id=user.id)
    try:
        await db.commit()
    except IntegrityError:  # taken by a registration in the meantime
        await db.rollback()
        raise taken from None
    return user


# Refresh tokens that were live on the account, kept as bare hashes until they would expire,
# so every signed-in device hears `account_deleted` on its next refresh (accounts.service).
_KEEP_DELETED_TOKENS_SQL = text(
    """
    INSERT INTO deleted_account_tokens (token_hash, expires_at)
    SELECT t.token_hash, t.expires_at
    FROM refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id
    WHERE s.user_id = :user_id AND s.revoked_at IS NULL AND t.used_at IS NULL
      AND t.expires_at > now()
    ON CONFLICT (token_hash) DO NOTHING
    """
)
_DELETE_STATEMENTS = (
    _KEEP_DELETED_TOKENS_SQL,
    text("DELETE FROM deleted_account_tokens WHERE expires_at <= now()"),
    # Keyed by the address, not the user: removed by hand.
    text("DELETE FROM login_failures WHERE email = :email"),
    text("DELETE FROM login_known_sources WHERE email = :email"),
    # Everything else that belongs to the user (sessions and refresh tokens, identities, OAuth
    # flows and codes, account tokens, unsent mail, every synced row, rejections, staged
    # uploads) references users with ON DELETE CASCADE. Synced rows deleted here reach every
    # device through replication as removals.
    text("DELETE FROM users WHERE id = :user_id"),
)


async def delete_account(
    db: AsyncSession, settings: Settings, limits: Pool, proof: Proof, password: str | None
) -> None:
    """Deletes the account and everything of it, in one transaction, once the caller proved it
    is them (`recent_proof`)."""
    user = await recent_proof(db, settings, limits, proof, password)
    params: dict[str, Any] = {"user_id": user.id, "email": user.email}
    for statement in _DELETE_STATEMENTS:
        await db.execute(statement, params)
    await db.commit()
    log.info("an account was deleted at its owner's request")
