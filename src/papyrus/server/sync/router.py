"""HTTP routes of the sync write path: the PowerSync upload and the user's rejection log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from papyrus.server.accounts.dependencies import CallerDep, DbDep
from papyrus.server.errors import (
    BadRequest,
    ErrorResponse,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from papyrus.server.sync import service, staging
from papyrus.server.sync.schemas import (
    PartStaged,
    RejectionList,
    RejectionPublic,
    UploadRejection,
    UploadResponse,
)
from papyrus.server.sync.validation import MAX_BODY_BYTES, Rejection, parse_batch

PREFIX = "/sync"
UPLOAD_PATH = "/powersync-upload"
PARTS_PATH = "/powersync-upload/parts"

router = APIRouter(
    prefix=PREFIX,
    tags=["sync"],
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)


@router.post(
    UPLOAD_PATH,
    response_model_exclude_unset=True,
    # Read raw (see `read_body`); documented here so generated clients know the body.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/UploadRequest"}}
            },
        }
    },
    responses={
        400: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        415: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
)
async def powersync_upload(request: Request, caller: CallerDep, db: DbDep) -> UploadResponse:
    """Apply one client transaction: `{"batch": [<PowerSync CRUD entry>, ...]}`, at most 1,000
    entries and 2 MiB. 200 `applied` (with `dropped`: late writes to deleted rows, left out) or
    200 `rejected` (nothing applied, recorded for the user): either way the client is done with
    the transaction. 5xx means retry later."""
    body = await read_body(request, MAX_BODY_BYTES)
    result = await service.apply_upload(db, caller.user_id, parse_batch(body))
    return _upload_response(result)


@router.post(
    PARTS_PATH,
    response_model_exclude_unset=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/UploadPartRequest"}}
            },
        }
    },
    responses={
        202: {"model": PartStaged},
        400: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        415: {"model": ErrorResponse},
        429: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
)
async def powersync_upload_part(
    request: Request, response: Response, caller: CallerDep, db: DbDep
) -> UploadResponse | PartStaged:
    """One part of a client transaction too large for one request: `{"upload_id", "index",
    "count", "tx_id", "batch"}`, sent in order from index 0, each part within the one-request
    limits. 202 `staged` until the last part, which answers for the whole transaction like
    `/powersync-upload`. 409 `upload_parts_missing`: resend from part 0 (see sync/staging.py)."""
    body = await read_body(request, MAX_BODY_BYTES)
    outcome = await staging.receive_part(db, caller.user_id, staging.parse_part(body))
    if isinstance(outcome, staging.Staged):
        response.status_code = 202
        return PartStaged(
            status="staged",
            upload_id=outcome.upload_id,
            received=outcome.index + 1,
            count=outcome.count,
        )
    return _upload_response(outcome)


def _upload_response(result: service.UploadResult) -> UploadResponse:
    if not result.rejections:  # left unset unless some were, so old clients see no change
        if result.dropped:
            return UploadResponse(
                status="applied", applied=result.applied, dropped=_public(result.dropped)
            )
        return UploadResponse(status="applied", applied=result.applied)
    return UploadResponse(status="rejected", applied=0, rejections=_public(result.rejections))


def _public(rejections: list[Rejection]) -> list[UploadRejection]:
    return [
        UploadRejection(op_id=r.op_id, id=r.row_id, code=r.code, message=r.message)
        for r in rejections
    ]


@router.get("/rejections")
async def list_rejections(
    caller: CallerDep,
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(description="Page: rejections older than this id.")] = None,
) -> RejectionList:
    """The caller's rejected upload operations, newest first."""
    rows = await service.list_rejections(db, caller.user_id, limit, before)
    return RejectionList(rejections=[RejectionPublic.model_validate(row) for row in rows])


async def read_body(request: Request, limit: int) -> bytes:
    """The JSON body, refused (413) from its Content-Length before reading, or while reading.

    `middleware.BodyLimit` has already buffered the body under the path's cap (`BODY_LIMITS`
    in `app`); this keeps the route's own limit and content-type check wherever it is mounted.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Invalid Content-Length header.", code="invalid_content_length")
        if int(declared) > limit:
            raise _too_large(limit)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"An upload may be at most {limit} bytes; keep client transactions smaller.",
        details={"max_bytes": limit},
    )
