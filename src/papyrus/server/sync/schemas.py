"""Models for the upload path and the rejection log.

The upload body is read raw and checked by `sync.validation` (an entry that fails is a
rejection, not a 422), so `UploadRequest` only documents it in the OpenAPI schema.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, JsonValue

from papyrus import contract
from papyrus.server.sync.models import ROW_ID_MAX
from papyrus.server.sync.validation import MAX_OPERATIONS

_TABLE_NAMES: list[JsonValue] = [table.name for table in contract.TABLES]
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PAIRS = ", ".join(
    f"{t.name} <{t.id_from[0]}>:<{t.id_from[1]}>" for t in contract.TABLES if t.id_from
)


class CrudEntry(BaseModel):
    """One operation, as the PowerSync SDKs serialise their CrudEntry."""

    op_id: int | None = Field(None, description="The client's operation id.")
    op: Literal["PUT", "PATCH", "DELETE"]
    # The enum comes from the declarations: a Literal here would be a hand copy of them.
    type: str = Field(description="The synced table.", json_schema_extra={"enum": _TABLE_NAMES})
    id: str = Field(
        description=(
            "The row id: a UUID, or for the tables whose ids come from a pair, two UUIDs "
            f"joined by a colon ({_PAIRS})."
        ),
        max_length=ROW_ID_MAX,
        pattern=f"^{_UUID}(:{_UUID})?$",
    )
    tx_id: int | None = Field(None, description="The client transaction this entry belongs to.")
    data: dict[str, Any] | None = Field(
        None, description="Column values: the whole row for PUT, the changed columns for PATCH."
    )
    old: dict[str, Any] | None = Field(None, description="Accepted and ignored.")
    metadata: str | None = Field(None, description="Accepted and ignored.")


class UploadRequest(BaseModel):
    """One client transaction, applied whole or rejected whole (at most 2 MiB)."""

    batch: list[CrudEntry] = Field(max_length=MAX_OPERATIONS)


class UploadPartRequest(UploadRequest):
    """One part of a client transaction too large for one request (see `sync/staging.py`)."""

    upload_id: uuid.UUID
    index: int = Field(ge=0)
    count: int = Field(ge=1)
    tx_id: int | None = None


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


class PartStaged(BaseModel):
    """A part of a staged upload was stored; send the next one (`received` parts so far)."""

    status: Literal["staged"]
    upload_id: uuid.UUID
    received: int
    count: int


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
