"""Single-use account tokens (mail links) and what is kept of a deleted account's sessions."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, LargeBinary, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from papyrus.server.db import Base, created_at, uuid_pk

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"
CHANGE_EMAIL = "change_email"


class AccountToken(Base):
    """The secret of one mailed link, as its SHA-256 only; deleted when used."""

    __tablename__ = "account_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True, nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    purpose: Mapped[str] = mapped_column(String(32), nullable=False)
    # The address the link was sent to: verifying it proves that address, and only while it is
    # still the account's (for an address change, the new one).
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[datetime] = created_at()
    expires_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )


class DeletedAccountToken(Base):
    """The hash of a refresh token that was live when its account was deleted, and nothing
    else: no user, no address. A device presenting it hears `account_deleted` (and clears its
    copy of the account) instead of a plain sign-out. Removed when the token would have
    expired."""

    __tablename__ = "deleted_account_tokens"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )
