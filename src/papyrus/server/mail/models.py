"""The outbox: mail a request decided to send, kept until an SMTP server accepted it.

A request inserts its message in the same transaction as whatever the message is about (a
single-use token, a changed password), so a crash can lose neither without the other; the
sender (`outbox.MailSender`) delivers it later, outside any request. A delivered message is
deleted. A message that keeps failing is marked `failed` and its bodies are cleared (the links
in them are single-use and short-lived anyway); the row, with its recipient and last error,
stays for the operator (`papyrus mail outbox`) for `FAILED_RETENTION` and goes with its user.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from papyrus.server.db import Base, created_at

PENDING = "pending"
FAILED = "failed"


class OutboxMessage(Base):
    __tablename__ = "mail_outbox"
    __table_args__ = (
        CheckConstraint(f"status IN ('{PENDING}', '{FAILED}')", name="status_valid"),
        Index("ix_mail_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # The account the message is about: deleting the account deletes its unsent mail.
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    recipient: Mapped[str] = mapped_column(String(254), nullable=False)
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    # Cleared when the message is marked failed; the row is deleted once delivered.
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Also the lease of a claimed message: a sender that dies mid-delivery frees it by then.
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    # When the link inside stops working: a message not delivered by then is not worth sending.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at()
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
