"""Applying an uploaded PowerSync transaction: all of it in one database transaction, or none.

A transaction may touch every synced table. Its operations are first collapsed, in order, into
each row's final effect (so PUT, PATCH, DELETE of one id in one transaction still mean what they
meant), then decided in memory (`sync.plan`) from the stored rows they touch or reference, then
applied table by table: deletes children first, upserts and patches parents first (the
declaration order). Set-based on purpose: one statement loads and locks what the transaction
touches or references, then a fixed number per table touched (unique-key and cycle look-ups
where declared, one DELETE, one multi-row upsert, one UPDATE for every PATCH), never one round
trip per operation. Rows a PUT writes whole are not loaded: the upsert's guard skips a stored
row that is another user's or whose values the declarations protect, and the transaction is
then decided again with those rows loaded.

Outcomes (see the PowerSync upload contract): a transaction that can never succeed is rejected
whole, recorded in `sync_rejections` and answered 200 so the client moves on; only transient
database trouble raises (503), so the client retries the same transaction later. Replays are
harmless: PUT and PATCH set values, DELETE of an absent row succeeds. A write that arrives after
its row (or the row it belongs to) was deleted is *dropped*: the rest of the transaction
applies, and the dropped operations are answered and recorded like rejections, so a deleted
row never comes back. Tombstones of deleted rows are kept `TOMBSTONE_DAYS` days, pruned by the
caller's uploads that delete.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from papyrus import contract
from papyrus.server.errors import ServiceUnavailable
from papyrus.server.sync import plan as planning
from papyrus.server.sync import statements
from papyrus.server.sync.models import TOMBSTONE_DAYS, unique_key_name
from papyrus.server.sync.plan import Key, RowPlan, Stored
from papyrus.server.sync.validation import Operation, Rejection, validate_batch

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
# Row rules a PATCH can break against stored values only the database sees together.
_ORDER_RULES = {
    f"ck_{table.name}_{rule.earlier}_before_{rule.later}": (table, rule)
    for table in contract.TABLES
    for rule in table.checks
}
_UNIQUE_KEYS = {
    unique_key_name(table, unique): (table, unique)
    for table in contract.TABLES
    for unique in table.unique
}


@dataclass(frozen=True)
class UploadResult:
    """`applied`: operations that took effect. `rejections`: why nothing did (empty when the
    transaction applied). `dropped`: late writes to deleted rows left out of an applied one."""

    applied: int
    rejections: list[Rejection] = field(default_factory=list)
    dropped: list[Rejection] = field(default_factory=list)


class _OwnershipRace(Exception):
    """Rows the upsert's owner guard refused: ids owned by another user."""

    def __init__(self, keys: set[Key]) -> None:
        self.keys = keys


class _Recheck(Exception):
    """The upsert's guard skipped a stored row whose values decide the outcome (a closed row,
    an immutable column): decide again with every written row loaded."""


async def apply_upload(db: AsyncSession, user_id: uuid.UUID, batch: list[Any]) -> UploadResult:
    """Validates and applies one client transaction; see the module docstring for outcomes."""
    operations, invalid = validate_batch(batch, user_id)
    owner = str(user_id)
    upload_id = uuid.uuid4()
    plans = planning.collapse(operations)
    try:
        try:
            try:
                rejections, dropped = await _attempt(db, owner, plans, invalid, bool(invalid))
            except _Recheck:  # its writes were rolled back to their savepoint
                plans = planning.collapse(operations)
                try:
                    rejections, dropped = await _attempt(db, owner, plans, invalid, True)
                except _Recheck:  # with every row locked, only a concurrent insert does this
                    await _safe_rollback(db)
                    raise _unavailable(_Recheck()) from None
            if not rejections:
                if dropped:
                    await _record_rejections(db, user_id, upload_id, dropped)
                await db.commit()
                return UploadResult(applied=len(batch) - len(dropped), dropped=dropped)
        except _OwnershipRace as race:
            foreign = {key: Stored(owner="") for key in race.keys}
            rejections = planning.forbidden(plans, foreign, owner)
        except DBAPIError as exc:
            if _sqlstate(exc)[:2] not in _PERMANENT_SQLSTATE_CLASSES:
                raise
            rejections = _refused(exc, plans, operations)
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


async def _attempt(
    db: AsyncSession,
    owner: str,
    plans: dict[Key, RowPlan],
    invalid: list[Rejection],
    everything: bool,
) -> tuple[list[Rejection], list[Rejection]]:
    """Decides the transaction and, when nothing rejects it, applies it (uncommitted).
    Returns the rejections, or the dropped operations of an applied transaction."""
    stored, tombstones = await _load(db, owner, plans, everything)
    rejections = invalid + planning.forbidden(plans, stored, owner)
    if rejections:
        return rejections, []
    verdict = planning.judge(plans, stored, tombstones, owner)
    rejections = verdict.rejections
    if not rejections:
        rejections += await _duplicates(db, owner, plans)
        rejections += await _cycles(db, owner, plans)
    if rejections:  # rejected anyway: name every foreign id, as a full load would
        return await _foreign(db, owner, plans, stored) + rejections, []
    # A savepoint, so deciding again undoes only these writes: a caller's own writes in the
    # same transaction (staged uploads drop their parts before applying) stay.
    async with db.begin_nested():
        await _apply(db, owner, plans)
    return [], verdict.dropped


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


# --- steps ---------------------------------------------------------------------------------------


async def _load(
    db: AsyncSession, owner: str, plans: dict[Key, RowPlan], everything: bool = False
) -> tuple[dict[Key, Stored], set[Key]]:
    """The stored rows the transaction touches or references, locked, and the caller's
    tombstones among the absent ones, in one statement. See `plan.wanted` for the rows a PUT
    writes whole, which are not loaded."""
    stored: dict[Key, Stored] = {}
    tombstones: set[Key] = set()
    wanted = planning.wanted(plans, everything)
    tables = tuple(t for t in contract.TABLES if t.name in wanted)
    if not tables:
        return stored, tombstones
    params: dict[str, Any] = {"owner": owner}
    pairs = []
    for n, table in enumerate(tables):
        ids = wanted[table.name]
        params[f"ids_{n}"] = sorted(ids.ids)
        pairs += [{"t": table.name, "id": row_id} for row_id in (*ids.ids, *ids.fresh)]
    params["wanted"] = _json(pairs)
    for row in await db.execute(statements.load(tables), params):
        if row.gone:
            tombstones.add((row.tbl, row.id))
        else:
            stored[(row.tbl, row.id)] = Stored(row.owner, row.row)
    return stored, tombstones


async def _foreign(
    db: AsyncSession, owner: str, plans: dict[Key, RowPlan], stored: dict[Key, Stored]
) -> list[Rejection]:
    """`forbidden` for the ids `_load` left to the upsert's owner guard."""
    foreign: dict[Key, Stored] = {}
    for table in contract.TABLES:
        ids = [p.row_id for k, p in plans.items() if p.table is table and k not in stored]
        if ids:
            found = await db.scalars(statements.foreign(table), {"ids": ids, "owner": owner})
            foreign.update({(table.name, row_id): Stored(owner="") for row_id in found})
    return planning.forbidden(plans, foreign, owner)


async def _duplicates(db: AsyncSession, owner: str, plans: dict[Key, RowPlan]) -> list[Rejection]:
    rejections: list[Rejection] = []
    for table in contract.TABLES:
        for unique in table.unique:
            rows = planning.unique_candidates(plans, table, unique)
            if not rows:
                continue
            written: dict[str, str] = {}
            existing: dict[str, str] = {}
            result = await db.execute(
                statements.unique_keys(table, unique), {"rows": _json(rows), "owner": owner}
            )
            for row in result:
                (written if row.mine else existing)[row.id] = row.key
            rejections += planning.duplicates(plans, table, unique, written, existing)
    return rejections


async def _cycles(db: AsyncSession, owner: str, plans: dict[Key, RowPlan]) -> list[Rejection]:
    rejections: list[Rejection] = []
    for table in contract.TABLES:
        if table.acyclic is None:
            continue
        starts = planning.cycle_starts(plans, table)
        if not starts:
            continue
        result = await db.execute(
            statements.ancestry(table), {"ids": sorted(starts), "owner": owner}
        )
        ancestry = {row.id: row.parent for row in result}
        rejections += planning.cycles(plans, table, ancestry)
    return rejections


async def _apply(db: AsyncSession, owner: str, plans: dict[Key, RowPlan]) -> None:
    """Deletes children first, then upserts and patches parents first."""
    by_table: dict[str, list[RowPlan]] = defaultdict(list)
    for key in sorted(plans):  # id order: concurrent uploads meet new ids in one order
        by_table[key[0]].append(plans[key])
    deleted = False
    for table in reversed(contract.TABLES):
        ids = [p.row_id for p in by_table.get(table.name, ()) if p.deletes]
        if ids:
            await db.execute(statements.delete(table), {"ids": ids, "owner": owner})
            deleted = True
    upserted: list[dict[str, str]] = []
    for table in contract.TABLES:
        chosen = by_table.get(table.name, ())
        rows = [
            {"id": p.row_id, **{k: v for k, v in p.values.items() if v is not None}}
            for p in chosen
            if p.writes and p.state == planning.REPLACED
        ]
        if rows:
            upserted += [{"t": table.name, "id": r["id"]} for r in rows]
            written = await db.scalar(
                statements.upsert(table), {"rows": _json(rows), "owner": owner}
            )
            if written != len(rows):  # the guard skipped rows: another user's, or protected
                found = await db.scalars(
                    statements.foreign(table), {"ids": [r["id"] for r in rows], "owner": owner}
                )
                foreign = {(table.name, row_id) for row_id in found}
                if foreign:
                    raise _OwnershipRace(foreign)
                raise _Recheck()
        patches = [
            {"id": p.row_id, "set": p.values}
            for p in chosen
            if p.writes and p.state == planning.PATCHED and p.values
        ]
        if patches:
            await db.execute(statements.patch(table), {"patches": _json(patches), "owner": owner})
    if deleted:  # only this upload's deletes can have left tombstones of rows it wrote again
        if upserted:
            await db.execute(
                statements.FORGET_TOMBSTONES, {"rows": _json(upserted), "owner": owner}
            )
        await db.execute(statements.PRUNE_TOMBSTONES, {"owner": owner, "days": TOMBSTONE_DAYS})


def _refused(
    exc: DBAPIError, plans: dict[Key, RowPlan], operations: list[Operation]
) -> list[Rejection]:
    """The rejection for a write the database refused. A unique key taken by a concurrent
    upload (the exclusion constraint, checked at commit) is `duplicate`; a PATCH that puts one
    end of an order rule out of line with the stored other end is `invalid_value`; anything
    else means validation missed a rule."""
    diag = getattr(exc.orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if _sqlstate(exc) in ("23505", "23P01") and constraint in _UNIQUE_KEYS:
        table, unique = _UNIQUE_KEYS[constraint]
        message = f"{', '.join(unique.columns)}: another of your {table.name} rows has this value."
        found = [
            Rejection.of(op, "duplicate", message)
            for p in plans.values()
            if p.table is table and p.writes
            for op in p.ops
            if any(c in op.values for c in unique.columns)
        ]
        if found:
            return found
    if _sqlstate(exc) == "23514" and constraint in _ORDER_RULES:
        table, rule = _ORDER_RULES[constraint]
        message = f"{rule.later}: must not be before {rule.earlier}."
        found = [
            Rejection.of(op, "invalid_value", message)
            for p in plans.values()
            if p.table is table and p.writes
            for op in p.ops
            if rule.earlier in op.values or rule.later in op.values
        ]
        if found:
            return found
    log.warning("sync upload: database refused a validated write (%s)", _sqlstate(exc))
    return [
        Rejection(
            None,
            operations[0].tx_id if operations else None,  # so a replay is known
            None,
            None,
            "constraint_violation",
            "The database refused this transaction's values.",
        )
    ]


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
