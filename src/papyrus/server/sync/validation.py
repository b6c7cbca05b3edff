"""Parsing and validating an uploaded PowerSync transaction, without touching the database.

Two levels of failure, on purpose:

* the envelope (the body is not JSON, not `{"batch": [...]}`, too big): a 4xx in the error shape.
  Only a broken client sends that, and no retry can fix it.
* an entry (unknown op or table, bad id, bad field): a *rejection* of the whole transaction,
  answered 200 so the client completes it and moves on. A 4xx there would block its upload queue.

Entries are the JSON form of the SDKs' CrudEntry: `{op_id, op, type, id, tx_id, data, old,
metadata}`. `old` and `metadata` are accepted and ignored. `type` names a synced table and
`data` is checked against its declaration (`papyrus.contract.validate_row`, the same check the
client runs before it queues a write): unknown fields are rejected (a silently dropped column
would be lost data), `id` and `owner_user_id` may be echoed but must match, the server's stamps
are ignored, SQLite encodings (0/1, JSON text) are accepted.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from papyrus import contract
from papyrus.contract import DELETE, PATCH, PUT
from papyrus.server.errors import ApiError, BadRequest, PayloadTooLarge
from papyrus.server.sync.models import ROW_ID_MAX

MAX_OPERATIONS = 1000
MAX_BODY_BYTES = 2 * 1024 * 1024
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1
_TABLE_NAMES = ", ".join(t.name for t in contract.TABLES)


class InvalidJson(BadRequest):
    code = "invalid_json"
    message = "The request body is not valid JSON."


class MalformedUpload(ApiError):
    status_code = 422
    code = "invalid_upload"
    message = 'Send one client transaction as {"batch": [<CRUD entry>, ...]}.'


class TooManyOperations(PayloadTooLarge):
    code = "too_many_operations"
    message = f"A transaction may hold at most {MAX_OPERATIONS} operations."


@dataclass(frozen=True)
class Operation:
    """One valid entry: `row_id` is canonical, `values` normalised client-writable columns."""

    op_id: int | None
    tx_id: int | None
    kind: str
    table: contract.Table
    row_id: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    """An operation that did not take effect, and why (a rejection, or a dropped late write)."""

    op_id: int | None
    tx_id: int | None
    op: str | None
    row_id: str | None
    code: str
    message: str

    @classmethod
    def of(cls, op: Operation, code: str, message: str) -> Rejection:
        return cls(op.op_id, op.tx_id, op.kind, op.row_id, code, message)


def parse_batch(body: bytes) -> list[Any]:
    """The list of entries, or a 4xx for an envelope no retry can fix."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # includes bad UTF-8 and absurd nesting
        raise InvalidJson() from None
    batch = document.get("batch") if isinstance(document, dict) else None
    if not isinstance(batch, list):
        raise MalformedUpload()
    if len(batch) > MAX_OPERATIONS:
        raise TooManyOperations(details={"max_operations": MAX_OPERATIONS})
    return batch


def validate_batch(batch: list[Any], user_id: uuid.UUID) -> tuple[list[Operation], list[Rejection]]:
    operations: list[Operation] = []
    rejections: list[Rejection] = []
    owner = str(user_id)
    for entry in batch:
        result = validate_entry(entry, owner)
        if isinstance(result, Operation):
            operations.append(result)
        else:
            rejections.append(result)
    return operations, rejections


def validate_entry(entry: Any, owner: str) -> Operation | Rejection:
    if not isinstance(entry, dict):
        return Rejection(None, None, None, None, "invalid_entry", "An entry must be a JSON object.")
    op_id, tx_id = _int64(entry.get("op_id")), _int64(entry.get("tx_id"))
    raw_op = entry.get("op")
    kind = raw_op.upper() if isinstance(raw_op, str) else None

    def reject(code: str, message: str) -> Rejection:
        shown_op = kind if kind in (PUT, PATCH, DELETE) else None
        return Rejection(op_id, tx_id, shown_op, display(entry.get("id")), code, message)

    if kind not in (PUT, PATCH, DELETE):
        return reject("invalid_op", "op must be PUT, PATCH or DELETE.")
    name = entry.get("type")
    table = contract.TABLES_BY_NAME.get(name) if isinstance(name, str) else None
    if table is None:
        return reject("unknown_table", f"type must name a synced table: {_TABLE_NAMES}.")
    row_id = contract.check_row_id(table, entry.get("id"))
    if row_id is None:
        if table.id_from:
            first, second = table.id_from
            return reject("invalid_id", f"{table.name} ids are <{first}>:<{second}> (UUIDs).")
        return reject("invalid_id", "id must be a UUID string.")
    if kind == DELETE:
        return Operation(op_id, tx_id, kind, table, row_id)
    data = entry.get("data")
    if not isinstance(data, dict):
        return reject("invalid_data", f"data must be a JSON object for {kind}.")
    values, problems = contract.validate_row(table, kind, row_id, data, owner=owner)
    if problems:
        return reject(problems[0].code, "; ".join(p.message for p in problems)[:2000])
    return Operation(op_id, tx_id, kind, table, row_id, values)


def display(value: Any, limit: int = ROW_ID_MAX) -> str | None:
    """A client value made safe to store and echo: bounded, no NUL, valid UTF-8."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    shown: str = value[:limit].replace("\x00", "")
    return shown.encode("utf-8", "replace").decode("utf-8")


def _int64(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if INT8_MIN <= value <= INT8_MAX else None
