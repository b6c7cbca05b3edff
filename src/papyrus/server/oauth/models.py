"""Linked provider identities, pending browser flows and one-time app codes.

States and codes are bearer secrets, so only their SHA-256 is stored. An app's PKCE challenge is
not a secret (it is a hash of the verifier the app keeps), so it is stored as sent.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from papyrus.server.db import Base, created_at, uuid_pk


class OAuthIdentity(Base):
    """A provider account (issuer-scoped `sub`) that signs in as one Papyrus user."""

    __tablename__ = "oauth_identities"
    __table_args__ = (
        UniqueConstraint("provider", "subject", name="uq_oauth_identities_provider_subject"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    # The provider's latest address for this account; informational, never used to sign in.
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = created_at()


class OAuthState(Base):
    """One started browser flow; deleted when the provider sends the browser back."""

    __tablename__ = "oauth_states"

    id: Mapped[uuid.UUID] = uuid_pk()
    state_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True, nullable=False)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    purpose: Mapped[str] = mapped_column(String(16), nullable=False)  # "sign_in" | "link"
    # Set for "link": the signed-in user who started it.
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE")
    )
    redirect_uri: Mapped[str] = mapped_column(String(2048), nullable=False)
    # Sent to the provider's token endpoint; useless without the provider's authorization code.
    code_verifier: Mapped[str] = mapped_column(String(128), nullable=False)
    nonce: Mapped[str] = mapped_column(String(128), nullable=False)
    # Sign-in only: hash of a cookie set on the browser that opened the start URL, so a callback
    # URL replayed into another browser (login CSRF) goes nowhere.
    browser_binding_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    # The app's own PKCE challenge (S256, RFC 7636) for the one-time code, if it sent one. Not
    # the verifier above, which is between Papyrus and the provider.
    app_code_challenge: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = created_at()
    expires_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )


class OAuthCode(Base):
    """The one-time code handed to the app; `used_at` marks it spent."""

    __tablename__ = "oauth_codes"

    id: Mapped[uuid.UUID] = uuid_pk()
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True, nullable=False)
    purpose: Mapped[str] = mapped_column(String(16), nullable=False)  # "sign_in" | "link"
    # "sign_in": the user to open a session for; "link": the user who asked to link.
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    email: Mapped[str | None] = mapped_column(String(254))
    # Copied from the flow's state: when set, spending the code needs the matching verifier.
    app_code_challenge: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = created_at()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
