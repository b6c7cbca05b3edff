"""Applying an uploaded PowerSync transaction: all of it in one database transaction, or none.

Set-based on purpose: whatever the size of the transaction, applying it costs a fixed handful of
statements (lock the rows, one DELETE, one multi-row upsert, one UPDATE for every PATCH), not one
round trip per operation. Operations on the same id are first collapsed, in order, into that id's
final effect, so PUT, PATCH, DELETE of one id in one transaction still mean what they meant.

Outcomes (see the PowerSync upload contract): a transaction that can never succeed is rejected
whole, recorded in `sync_rejections` and answered 200 so the client moves on; only transient
database trouble raises (503), so the client retries the same transaction later. Replays are
harmless: PUT and PATCH set values, DELETE of an absent row succeeds.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from papyrus.server.errors import ServiceUnavailable
from papyrus.server.sync.validation import (
    COLUMNS,
    DELETE,
    PATCH,
    PUT,
    Operation,
    Rejection,
    validate_batch,
)

log = logging.getLogger(__name__)

# Rejections kept per user; older ones are pruned when new ones are recorded.
REJECTIONS_KEPT = 1000
# A client whose 200 got lost uploads the same transaction again: within this window, a
# rejection it already has on record (same tx_id, op_id, row and code) is not listed twice.
REPLAY_WINDOW = "1 day"
# SQLSTATE classes worth a retry: connection, transaction rollback (deadlock, serialization),
# insufficient resources, operator intervention (shutdown, statement timeout).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")
# Data exceptions and integrity violations: a bad write that validation missed, never retryable.
_PERMANENT_SQLSTATE_CLASSES = ("22", "23")


@dataclass(frozen=True)
class UploadResult:
    applied: int
    rejections: list[Rejection] = field(default_factory=list)


@dataclass
class _RowPlan:
    """The final effect of a transaction's operations on one id."""

    state: str = "untouched"  # untouched | patched | replaced | deleted
    values: dict[str, Any] = field(default_factory=dict)
    delete_first: bool = False  # replaced after a delete in the same transaction


class _OwnershipRace(Exception):
    """Rows the upsert's owner guard refused: ids owned by another user."""

    def __init__(self, row_ids: set[uuid.UUID]) -> None:
        self.row_ids = row_ids


async def apply_upload(db: AsyncSession, user_id: uuid.UUID, batch: list[Any]) -> UploadResult:
    """Validates and applies one client transaction; see the module docstring for outcomes."""
    operations, rejections = validate_batch(batch, user_id)
    plans = collapse(operations)
    upload_id = uuid.uuid4()
    try:
        try:
            # Rows a PUT replaces need no lock: the upsert's owner guard checks them in the same
            # statement. When the transaction is rejected anyway, check every id for the report.
            locked = {i for i, p in plans.items() if rejections or p.state != "replaced"}
            owners = await _lock_owners(db, locked)
            rejections += _ownership_rejections(operations, owners, user_id)
            if not rejections:
                await _apply(db, user_id, plans)
                await db.commit()
                return UploadResult(applied=len(batch))
        except _OwnershipRace as race:
            rejections = _ownership_rejections(
                operations, dict.fromkeys(race.row_ids, None), user_id
            )
        except DBAPIError as exc:
            if _sqlstate(exc)[:2] not in _PERMANENT_SQLSTATE_CLASSES:
                raise
            log.warning("sync upload: database refused a validated write (%s)", _sqlstate(exc))
            rejections = [
                Rejection(
                    None,
                    operations[0].tx_id if operations else None,  # so a replay is known
                    None,
                    None,
                    "constraint_violation",
                    "The database refused this transaction's values.",
                )
            ]
        await db.rollback()
        await _record_rejections(db, user_id, upload_id, rejections)
        await db.commit()
        return UploadResult(applied=0, rejections=rejections)
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        await _safe_rollback(db)
        raise _unavailable(exc) from None
    except DBAPIError as exc:
        await _safe_rollback(db)
        if exc.connection_invalidated or _sqlstate(exc)[:2] in _TRANSIENT_SQLSTATE_CLASSES:
            raise _unavailable(exc) from None
        raise


def collapse(operations: list[Operation]) -> dict[uuid.UUID, _RowPlan]:
    """Each id's final effect, applying its operations in upload order."""
    plans: dict[uuid.UUID, _RowPlan] = {}
    for op in operations:
        plan = plans.setdefault(op.row_id, _RowPlan())
        if op.kind == PUT:
            plan.delete_first = plan.delete_first or plan.state == "deleted"
            plan.state, plan.values = "replaced", dict(op.values)
        elif op.kind == PATCH:
            if plan.state == "deleted":
                continue  # patching a row this transaction deleted: nothing to update
            if plan.state == "untouched":
                plan.state = "patched"
            plan.values.update(op.values)
        elif op.kind == DELETE:
            plan.state, plan.values, plan.delete_first = "deleted", {}, False
    return plans


async def list_rejections(
    db: AsyncSession, user_id: uuid.UUID, limit: int, before: int | None
) -> list[dict[str, Any]]:
    query = (
        "SELECT id, upload_id, tx_id, op_id, op, row_id, code, message, created_at "
        "FROM sync_rejections WHERE user_id = :user_id"
        + (" AND id < :before" if before is not None else "")
        + " ORDER BY id DESC LIMIT :limit"
    )
    params: dict[str, Any] = {"user_id": user_id, "limit": limit}
    if before is not None:
        params["before"] = before
    result = await db.execute(text(query), params)
    return [dict(row._mapping) for row in result]


# --- statements ---------------------------------------------------------------------------------

_ID_LIST = bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))

_LOCK_SQL = text(
    "SELECT id, owner_user_id FROM books WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
).bindparams(_ID_LIST)

_DELETE_SQL = text("DELETE FROM books WHERE id = ANY(:ids) AND owner_user_id = :owner").bindparams(
    _ID_LIST
)

_NAMES = list(COLUMNS)
# PUT replaces the whole row: a column left out becomes NULL, or its default where it has one.
_SELECT_EXPRESSIONS = {"is_favorite": "coalesce(r.is_favorite, false)"}
_UPSERT_SQL = text(
    f"""
    WITH written AS (
    INSERT INTO books AS b (id, owner_user_id, {", ".join(_NAMES)}, added_at, updated_at)
    SELECT r.id, :owner, {", ".join(_SELECT_EXPRESSIONS.get(n, f"r.{n}") for n in _NAMES)},
           now(), now()
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
        id uuid, {", ".join(f"{c.name} {c.sql_type}" for c in COLUMNS.values())})
    ON CONFLICT (id) DO UPDATE SET
        {", ".join(f"{n} = excluded.{n}" for n in _NAMES)}, updated_at = excluded.updated_at
    WHERE b.owner_user_id = excluded.owner_user_id
    RETURNING 1)
    SELECT count(*) FROM written
    """
)

_FOREIGN_SQL = text(
    "SELECT id FROM books WHERE id = ANY(:ids) AND owner_user_id <> :owner"
).bindparams(_ID_LIST)


def _patch_assignment(name: str, sql_type: str) -> str:
    if sql_type == "jsonb":  # JSON null in the patch clears the column
        value = f"nullif(p.d -> '{name}', 'null'::jsonb)"
    elif sql_type == "text":
        value = f"p.d ->> '{name}'"
    else:
        value = f"(p.d ->> '{name}')::{sql_type}"
    return f"{name} = CASE WHEN p.d ? '{name}' THEN {value} ELSE b.{name} END"


_PATCH_SQL = text(
    f"""
    UPDATE books AS b SET
        {", ".join(_patch_assignment(c.name, c.sql_type) for c in COLUMNS.values())},
        updated_at = now()
    FROM (
        SELECT (e ->> 'id')::uuid AS id, e -> 'set' AS d
        FROM jsonb_array_elements(CAST(:patches AS jsonb)) AS e
    ) AS p
    WHERE b.id = p.id AND b.owner_user_id = :owner
    """
)


async def _lock_owners(db: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """Locks the existing rows in id order (so concurrent uploads cannot deadlock on them)."""
    if not ids:
        return {}
    result = await db.execute(_LOCK_SQL, {"ids": sorted(ids)})
    return {row.id: row.owner_user_id for row in result}


def _ownership_rejections(
    operations: list[Operation], owners: Mapping[uuid.UUID, uuid.UUID | None], user_id: uuid.UUID
) -> list[Rejection]:
    return [
        Rejection(
            op.op_id,
            op.tx_id,
            op.kind,
            str(op.row_id),
            "forbidden",
            "This id belongs to another user's row.",
        )
        for op in operations
        if op.row_id in owners and owners[op.row_id] != user_id
    ]


async def _apply(db: AsyncSession, user_id: uuid.UUID, plans: dict[uuid.UUID, _RowPlan]) -> None:
    deletes = [i for i, p in plans.items() if p.state == "deleted" or p.delete_first]
    # Sorted, so concurrent uploads touching the same new ids wait on each other in one order.
    replaces = [
        {"id": str(i), **{k: v for k, v in p.values.items() if v is not None}}
        for i, p in sorted(plans.items(), key=lambda item: item[0].int)
        if p.state == "replaced"
    ]
    patches = [
        {"id": str(i), "set": p.values}
        for i, p in plans.items()
        if p.state == "patched" and p.values
    ]
    if deletes:
        await db.execute(_DELETE_SQL, {"ids": deletes, "owner": user_id})
    if replaces:
        written = await db.scalar(_UPSERT_SQL, {"rows": _json(replaces), "owner": user_id})
        if written != len(replaces):  # the owner guard skipped rows: another user's ids
            ids = [uuid.UUID(r["id"]) for r in replaces]
            foreign = await db.scalars(_FOREIGN_SQL, {"ids": ids, "owner": user_id})
            raise _OwnershipRace(set(foreign))
    if patches:
        await db.execute(_PATCH_SQL, {"patches": _json(patches), "owner": user_id})


async def _record_rejections(
    db: AsyncSession, user_id: uuid.UUID, upload_id: uuid.UUID, rejections: list[Rejection]
) -> None:
    rows = [
        {
            "tx_id": r.tx_id,
            "op_id": r.op_id,
            "op": r.op,
            "row_id": r.row_id,
            "code": r.code,
            "message": r.message,
        }
        for r in rejections
    ]
    await db.execute(
        text(
            """
            INSERT INTO sync_rejections
                (user_id, upload_id, tx_id, op_id, op, row_id, code, message)
            SELECT :user_id, :upload_id, r.tx_id, r.op_id, r.op, r.row_id, r.code, r.message
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
                tx_id bigint, op_id bigint, op text, row_id text, code text, message text)
            WHERE r.tx_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM sync_rejections s
                WHERE s.user_id = :user_id AND s.tx_id = r.tx_id
                  AND s.op_id IS NOT DISTINCT FROM r.op_id
                  AND s.row_id IS NOT DISTINCT FROM r.row_id AND s.code = r.code
                  AND s.created_at > now() - CAST(:replay_window AS interval))
            """
        ),
        {
            "user_id": user_id,
            "upload_id": upload_id,
            "rows": _json(rows),
            "replay_window": REPLAY_WINDOW,
        },
    )
    await db.execute(
        text(
            """
            DELETE FROM sync_rejections WHERE id IN (
                SELECT id FROM sync_rejections WHERE user_id = :user_id
                ORDER BY id DESC OFFSET :kept)
            """
        ),
        {"user_id": user_id, "kept": REJECTIONS_KEPT},
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _sqlstate(exc: DBAPIError) -> str:
    return getattr(exc.orig, "sqlstate", None) or ""


def _unavailable(exc: Exception) -> ServiceUnavailable:
    log.warning("sync upload: transient database failure (%s)", type(exc).__name__)
    return ServiceUnavailable(
        "The database is temporarily unavailable; retry the upload.",
        headers={"Retry-After": "5"},
    )


async def _safe_rollback(db: AsyncSession) -> None:
    try:
        await db.rollback()
    except Exception:  # the connection may be gone; the pool discards it
        log.debug("sync upload: rollback failed", exc_info=True)
