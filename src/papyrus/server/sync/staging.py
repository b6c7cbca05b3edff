"""Staged uploads: a client transaction too large for one request, sent in parts, applied as one.

A local transaction is atomic, so its upload must be too: uploading its pieces as separate
transactions would let the server hold half of it. Instead the client sends the transaction's
entries in parts, in order, each within the one-request limits (`MAX_OPERATIONS`,
`MAX_BODY_BYTES`). Parts are stored in `sync_upload_parts` exactly as received; when the last one
arrives, every part is read back in order and the whole transaction goes through
`service.apply_upload`, in the same database transaction that deletes the parts. After a crash
the transaction is either applied and its parts gone, or not applied and its parts still staged.

`POST /v1/sync/powersync-upload/parts`, body `{"upload_id": "<uuid>", "index": i, "count": n,
"tx_id": <int or null>, "batch": [<CRUD entry>, ...]}`:

* part 0 starts (or restarts) the upload: whatever was staged under that id is dropped;
* part i > 0 needs parts 0 .. i-1 staged under the same id, `count` and `tx_id`; a part sent
  again replaces itself (a lost 202 is harmless);
* 202 `staged` for every part but the last; the last (i = n - 1) answers like a one-request
  upload: 200 `applied` or 200 `rejected`, for the whole transaction;
* 409 `upload_parts_missing` means "resend from part 0": earlier parts expired, or the upload was
  already applied and its 200 lost (replaying a whole transaction is harmless by the upload
  contract).

Bounds: a whole transaction holds at most `MAX_TRANSACTION_OPERATIONS` entries and
`MAX_TRANSACTION_BYTES` of part bodies; a user has at most `MAX_STAGED_UPLOADS` uploads staged;
parts expire after `STAGED_PART_TTL`. Assembly parses the whole transaction in memory (the
upload contract's `apply_upload` takes it as one list), so at most `ASSEMBLY_SLOTS` assemblies
run at once per process: the memory a process spends on them is bounded by those two numbers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeGuard

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from papyrus.server.errors import ApiError, Conflict, PayloadTooLarge, ServiceUnavailable
from papyrus.server.sync import service
from papyrus.server.sync.service import UploadResult
from papyrus.server.sync.validation import MAX_OPERATIONS, InvalidJson, TooManyOperations

log = logging.getLogger(__name__)

# A whole transaction. 100,000 operations is five times a large library imported in one go;
# 32 MiB of part bodies holds 100,000 short records or about 75,000 full ones. The bound is
# memory: `apply_upload` takes the transaction as one list, and assembling one at these limits
# adds 250-350 MB to the API process (bench/big_upload.py measures it; 64 MiB would add about
# 500 MB). ASSEMBLY_SLOTS bounds how many run at once. The Python client holds the same numbers
# (papyrus/client/limits.py; a test keeps them equal).
MAX_TRANSACTION_OPERATIONS = 100_000
MAX_TRANSACTION_BYTES = 32 * 1024 * 1024
# Parts per upload: far more than the limits above need (100 full parts, or about 16 parts of
# 2 MiB), so it only bounds the rows one upload can hold.
MAX_PARTS = 1000
MAX_STAGED_UPLOADS = 8
STAGED_PART_TTL = "24 hours"
ASSEMBLY_SLOTS = 1
# Expired parts of all users removed by one request that starts an upload.
_SWEEP_BATCH = 1000
_ENVELOPE_FIELDS = frozenset({"upload_id", "index", "count", "tx_id", "batch"})
_INT8_MIN, _INT8_MAX = -(2**63), 2**63 - 1
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")


class MalformedPart(ApiError):
    status_code = 422
    code = "invalid_upload_part"
    message = (
        'Send a part as {"upload_id": "<uuid>", "index": i, "count": n, "tx_id": <int or null>,'
        ' "batch": [<CRUD entry>, ...]}.'
    )


class PartsMissing(Conflict):
    code = "upload_parts_missing"
    message = (
        "Parts before this one are not staged (they expired, or this upload was already applied "
        "and its answer lost); resend the whole transaction from part 0."
    )


class PartMismatch(Conflict):
    code = "upload_part_mismatch"
    message = (
        "This part's count or tx_id differs from the parts staged before it under the same "
        "upload_id; resend the whole transaction from part 0."
    )


class TransactionTooLarge(PayloadTooLarge):
    code = "transaction_too_large"
    message = (
        f"A transaction may hold at most {MAX_TRANSACTION_OPERATIONS} operations and "
        f"{MAX_TRANSACTION_BYTES} bytes over all its parts; its staged parts were dropped."
    )


class TooManyStagedUploads(ApiError):
    status_code = 429
    code = "too_many_staged_uploads"
    message = (
        f"At most {MAX_STAGED_UPLOADS} uploads may be staged at once; finish one, or retry "
        "once abandoned ones expire."
    )


@dataclass(frozen=True)
class Part:
    upload_id: uuid.UUID
    index: int
    count: int
    tx_id: int | None
    batch: list[Any]
    body: bytes

    @property
    def is_last(self) -> bool:
        return self.index == self.count - 1


@dataclass(frozen=True)
class Staged:
    upload_id: uuid.UUID
    index: int
    count: int


def parse_part(body: bytes) -> Part:
    """The part's envelope, checked (a 4xx for anything no retry can fix); entries are judged
    only when the whole transaction is assembled, like a one-request upload."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidJson() from None
    if not isinstance(document, dict):
        raise MalformedPart()
    if not set(document) <= _ENVELOPE_FIELDS:  # the names are not echoed: they may not be text
        raise MalformedPart(
            "Unknown fields in the part envelope.", details={"fields": sorted(_ENVELOPE_FIELDS)}
        )
    upload_id = _uuid(document.get("upload_id"))
    if upload_id is None:
        raise MalformedPart("upload_id must be a UUID string.", details={"field": "upload_id"})
    count = document.get("count")
    if not _is_int(count) or not 1 <= count <= MAX_PARTS:
        raise MalformedPart(
            f"count must be an integer from 1 to {MAX_PARTS}.", details={"field": "count"}
        )
    index = document.get("index")
    if not _is_int(index) or not 0 <= index < count:
        raise MalformedPart(
            "index must be an integer from 0 to count - 1.", details={"field": "index"}
        )
    tx_id = document.get("tx_id")
    if tx_id is not None and (not _is_int(tx_id) or not _INT8_MIN <= tx_id <= _INT8_MAX):
        raise MalformedPart("tx_id must be a 64-bit integer or null.", details={"field": "tx_id"})
    batch = document.get("batch")
    if not isinstance(batch, list) or not batch:
        raise MalformedPart(
            "batch must be a non-empty list of CRUD entries.", details={"field": "batch"}
        )
    if len(batch) > MAX_OPERATIONS:
        raise TooManyOperations(details={"max_operations": MAX_OPERATIONS})
    return Part(upload_id, index, count, tx_id, batch, body)


async def receive_part(db: AsyncSession, user_id: uuid.UUID, part: Part) -> Staged | UploadResult:
    """Stages one part, or applies the whole transaction when `part` is its last."""
    try:
        if not part.is_last:
            return await _stage(db, user_id, part)
        await db.commit()  # hand the connection back while waiting for an assembly slot
        async with _assembly_slot():
            return await _assemble_and_apply(db, user_id, part)
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        await _safe_rollback(db)
        raise _unavailable(exc) from None
    except DBAPIError as exc:
        await _safe_rollback(db)
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        if exc.connection_invalidated or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
            raise _unavailable(exc) from None
        raise


async def _stage(db: AsyncSession, user_id: uuid.UUID, part: Part) -> Staged:
    if part.index == 0:
        await _start(db, user_id, part.upload_id)
    else:
        await _lock_upload(db, user_id, part.upload_id)
        await _check_predecessors(db, user_id, part)
    await db.execute(
        text(
            """
            INSERT INTO sync_upload_parts
                (user_id, upload_id, part_index, part_count, tx_id, entry_count, body)
            VALUES (:user_id, :upload_id, :index, :count, :tx_id, :entries, :body)
            ON CONFLICT (user_id, upload_id, part_index) DO UPDATE SET
                part_count = excluded.part_count, tx_id = excluded.tx_id,
                entry_count = excluded.entry_count, body = excluded.body, created_at = now()
            """
        ),
        {
            "user_id": user_id,
            "upload_id": part.upload_id,
            "index": part.index,
            "count": part.count,
            "tx_id": part.tx_id,
            "entries": len(part.batch),
            "body": part.body,
        },
    )
    await db.commit()
    return Staged(part.upload_id, part.index, part.count)


async def _assemble_and_apply(db: AsyncSession, user_id: uuid.UUID, part: Part) -> UploadResult:
    if part.index == 0:  # a one-part upload: nothing staged to wait for
        await _start(db, user_id, part.upload_id, staging=False)
    else:
        await _lock_upload(db, user_id, part.upload_id)
        await _check_predecessors(db, user_id, part)
    batch: list[Any] = []
    for index in range(part.index):  # one stored body in memory at a time
        body = await db.scalar(
            text(
                "SELECT body FROM sync_upload_parts"
                " WHERE user_id = :user_id AND upload_id = :upload_id AND part_index = :index"
            ),
            {"user_id": user_id, "upload_id": part.upload_id, "index": index},
        )
        batch.extend(json.loads(body)["batch"])  # checked when it was staged
    batch.extend(part.batch)
    # In the transaction apply_upload commits when it applies: applied and gone, or neither.
    await _drop(db, user_id, part.upload_id)
    result = await service.apply_upload(db, user_id, batch)
    if result.rejections:
        # A rejection rolled back the drop above; the verdict is final, so the parts go now.
        await _drop(db, user_id, part.upload_id)
        await db.commit()
    log.info(
        "staged upload of %d parts, %d operations: %s",
        part.count,
        len(batch),
        "rejected" if result.rejections else "applied",
    )
    return result


async def _start(
    db: AsyncSession, user_id: uuid.UUID, upload_id: uuid.UUID, *, staging: bool = True
) -> None:
    """Part 0: drop what was staged under this id, sweep expired parts, and (when this part is
    to be staged) enforce the per-user bound. The user lock makes the count-then-insert of
    concurrent new uploads exact."""
    await _advisory_lock(db, f"papyrus.staging:{user_id}")
    await _lock_upload(db, user_id, upload_id)
    await db.execute(
        text(
            "DELETE FROM sync_upload_parts WHERE user_id = :user_id"
            " AND (upload_id = :upload_id OR created_at < now() - CAST(:ttl AS interval))"
        ),
        {"user_id": user_id, "upload_id": upload_id, "ttl": STAGED_PART_TTL},
    )
    await db.execute(
        text(
            """
            DELETE FROM sync_upload_parts WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM sync_upload_parts
                WHERE created_at < now() - CAST(:ttl AS interval)
                LIMIT :batch FOR UPDATE SKIP LOCKED))
            """
        ),
        {"ttl": STAGED_PART_TTL, "batch": _SWEEP_BATCH},
    )
    if not staging:
        return
    staged = await db.scalar(
        text("SELECT count(DISTINCT upload_id) FROM sync_upload_parts WHERE user_id = :user_id"),
        {"user_id": user_id},
    )
    if staged >= MAX_STAGED_UPLOADS:
        await db.rollback()
        raise TooManyStagedUploads(
            details={"max_staged_uploads": MAX_STAGED_UPLOADS},
            headers={"Retry-After": "60"},
        )


async def _check_predecessors(db: AsyncSession, user_id: uuid.UUID, part: Part) -> None:
    """Parts 0 .. index-1 staged (and not expired), matching this part; totals within bounds."""
    rows = (
        await db.execute(
            text(
                """
                SELECT part_index, part_count, tx_id, entry_count, octet_length(body) AS size
                FROM sync_upload_parts
                WHERE user_id = :user_id AND upload_id = :upload_id AND part_index < :index
                  AND created_at >= now() - CAST(:ttl AS interval)
                ORDER BY part_index
                """
            ),
            {
                "user_id": user_id,
                "upload_id": part.upload_id,
                "index": part.index,
                "ttl": STAGED_PART_TTL,
            },
        )
    ).all()
    staged = [row.part_index for row in rows]
    if staged != list(range(part.index)):
        missing = next(i for i in range(part.index) if i >= len(staged) or staged[i] != i)
        await db.rollback()
        raise PartsMissing(
            details={"upload_id": str(part.upload_id), "first_missing_index": missing}
        )
    if any(row.part_count != part.count or row.tx_id != part.tx_id for row in rows):
        await db.rollback()
        raise PartMismatch(details={"upload_id": str(part.upload_id)})
    operations = sum(row.entry_count for row in rows) + len(part.batch)
    size = sum(row.size for row in rows) + len(part.body)
    if operations > MAX_TRANSACTION_OPERATIONS or size > MAX_TRANSACTION_BYTES:
        await _drop(db, user_id, part.upload_id)  # it can never complete: free its space
        await db.commit()
        raise TransactionTooLarge(
            details={
                "max_operations": MAX_TRANSACTION_OPERATIONS,
                "max_bytes": MAX_TRANSACTION_BYTES,
            }
        )


async def _drop(db: AsyncSession, user_id: uuid.UUID, upload_id: uuid.UUID) -> None:
    await db.execute(
        text("DELETE FROM sync_upload_parts WHERE user_id = :user_id AND upload_id = :upload_id"),
        {"user_id": user_id, "upload_id": upload_id},
    )


async def _lock_upload(db: AsyncSession, user_id: uuid.UUID, upload_id: uuid.UUID) -> None:
    """Serialises the requests of one upload (a part resent while the first try still runs)."""
    await _advisory_lock(db, f"papyrus.upload:{user_id}:{upload_id}")


async def _advisory_lock(db: AsyncSession, key: str) -> None:
    await db.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def _assembly_slot() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(ASSEMBLY_SLOTS)
    async with slots:
        yield


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _uuid(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _unavailable(exc: Exception) -> ServiceUnavailable:
    log.warning("staged upload: transient database failure (%s)", type(exc).__name__)
    return ServiceUnavailable(
        "The database is temporarily unavailable; send this part again.",
        headers={"Retry-After": "5"},
    )


async def _safe_rollback(db: AsyncSession) -> None:
    try:
        await db.rollback()
    except Exception:  # the connection may be gone; the pool discards it
        log.debug("staged upload: rollback failed", exc_info=True)
