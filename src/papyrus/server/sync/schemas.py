"""Response models for the upload path and the rejection log.

The upload body itself is read raw (to enforce the size limit while reading) and checked by
`sync.validation`, so it has no request model here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class UploadRejection(BaseModel):
    op_id: int | None
    id: str | None
    code: str
    message: str


class UploadResponse(BaseModel):
    """`applied`: the transaction took effect, less any `dropped` operations (writes to rows
    deleted before they arrived; also recorded with the rejections). `rejected`: nothing took
    effect; the client should move on."""

    status: Literal["applied", "rejected"]
    applied: int
    rejections: list[UploadRejection] | None = None
    dropped: list[UploadRejection] | None = None


class RejectionPublic(BaseModel):
    id: int
    upload_id: uuid.UUID
    tx_id: int | None
    op_id: int | None
    op: str | None
    row_id: str | None
    code: str
    message: str
    created_at: datetime


class RejectionList(BaseModel):
    rejections: list[RejectionPublic]
