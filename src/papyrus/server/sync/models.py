"""Synced tables (replicated to clients by PowerSync) and the record of rejected uploads.

`books` rows are created by clients (client-generated UUIDs) and written only through the upload
path; the CHECK constraints repeat the upload validation so no other writer can store what the
clients' schema cannot hold.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from papyrus.server.db import Base

READING_STATUSES = ("not_started", "reading", "finished", "abandoned")

# Column size limits, shared with the upload validation (sync/validation.py).
TITLE_MAX = 500
SHORT_TEXT_MAX = 500
ISBN_MAX = 32
LANGUAGE_MAX = 35  # the longest well-formed BCP 47 tags
URL_MAX = 2048
CFI_MAX = 4096
DESCRIPTION_MAX = 20_000


class Book(Base):
    __tablename__ = "books"
    __table_args__ = (
        CheckConstraint(f"char_length(title) BETWEEN 1 AND {TITLE_MAX}", name="title_length"),
        CheckConstraint("page_count >= 0", name="page_count_non_negative"),
        CheckConstraint("current_page >= 0", name="current_page_non_negative"),
        CheckConstraint(
            "current_position >= 0 AND current_position <= 1", name="current_position_range"
        ),
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),
        CheckConstraint(
            "reading_status IN (" + ", ".join(f"'{s}'" for s in READING_STATUSES) + ")",
            name="reading_status_valid",
        ),
        CheckConstraint("jsonb_typeof(co_authors) = 'array'", name="co_authors_array"),
        CheckConstraint("jsonb_typeof(custom_metadata) = 'object'", name="custom_metadata_object"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owner_user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    title: Mapped[str] = mapped_column(Text, nullable=False)
    subtitle: Mapped[str | None] = mapped_column(String(SHORT_TEXT_MAX))
    author: Mapped[str | None] = mapped_column(String(SHORT_TEXT_MAX))
    co_authors: Mapped[list[str] | None] = mapped_column(JSONB)
    isbn: Mapped[str | None] = mapped_column(String(ISBN_MAX))
    isbn13: Mapped[str | None] = mapped_column(String(ISBN_MAX))
    publisher: Mapped[str | None] = mapped_column(String(SHORT_TEXT_MAX))
    language: Mapped[str | None] = mapped_column(String(LANGUAGE_MAX))
    page_count: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(String(DESCRIPTION_MAX))
    cover_image_url: Mapped[str | None] = mapped_column(String(URL_MAX))
    reading_status: Mapped[str | None] = mapped_column(String(16))
    current_page: Mapped[int | None] = mapped_column(Integer)
    current_position: Mapped[float | None] = mapped_column(Double)
    current_cfi: Mapped[str | None] = mapped_column(String(CFI_MAX))
    is_favorite: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    rating: Mapped[int | None] = mapped_column(Integer)
    custom_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    added_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class SyncRejection(Base):
    """One operation of an uploaded transaction that was rejected (the whole transaction was)."""

    __tablename__ = "sync_rejections"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # Groups the rejections of one uploaded transaction.
    upload_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    tx_id: Mapped[int | None] = mapped_column(BigInteger)
    op_id: Mapped[int | None] = mapped_column(BigInteger)
    op: Mapped[str | None] = mapped_column(String(8))
    row_id: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64), nullable=False)
    message: Mapped[str] = mapped_column(String(2000), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class SyncUploadPart(Base):
    """One part of a client transaction too large for one request, staged until its last part
    arrives (see sync/staging.py). `body` is the part's request body exactly as received."""

    __tablename__ = "sync_upload_parts"
    __table_args__ = (
        CheckConstraint("part_index >= 0 AND part_index < part_count", name="part_index_range"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    upload_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    part_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    part_count: Mapped[int] = mapped_column(Integer, nullable=False)
    tx_id: Mapped[int | None] = mapped_column(BigInteger)
    entry_count: Mapped[int] = mapped_column(Integer, nullable=False)
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False, index=True
    )
