"""Parsing and validating an uploaded PowerSync transaction, without touching the database.

Two levels of failure, on purpose:

* the envelope (the body is not JSON, not `{"batch": [...]}`, too big): a 4xx in the error shape.
  Only a broken client sends that, and no retry can fix it.
* an entry (unknown op or table, bad id, bad field): a *rejection* of the whole transaction,
  answered 200 so the client completes it and moves on. A 4xx there would block its upload queue.

Entries are the JSON form of the SDKs' CrudEntry: `{op_id, op, type, id, tx_id, data, old,
metadata}`. `old` and `metadata` are accepted and ignored. Field rules for `books` `data`:

* unknown fields are rejected (a silently dropped column would be lost data);
* `id` and `owner_user_id` may be echoed back (SDKs upload every synced column on PUT) but must
  equal the entry's id and the caller's user id; `added_at`/`updated_at` are server-set and ignored;
* SQLite clients' encodings are accepted: 0/1 for `is_favorite`, JSON text for `co_authors` and
  `custom_metadata`; `is_favorite: null` counts as false;
* strings must be valid Unicode without NUL, numbers finite, sizes within the column limits.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from papyrus.server.errors import ApiError, BadRequest, PayloadTooLarge
from papyrus.server.sync.models import (
    CFI_MAX,
    DESCRIPTION_MAX,
    ISBN_MAX,
    LANGUAGE_MAX,
    READING_STATUSES,
    SHORT_TEXT_MAX,
    TITLE_MAX,
    URL_MAX,
)

MAX_OPERATIONS = 1000
MAX_BODY_BYTES = 2 * 1024 * 1024
TABLE = "books"
PUT, PATCH, DELETE = "PUT", "PATCH", "DELETE"
INT4_MAX = 2**31 - 1
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1
CO_AUTHORS_MAX = 100
CUSTOM_METADATA_MAX_BYTES = 16 * 1024
JSON_MAX_DEPTH = 20
SERVER_SET_FIELDS = frozenset({"added_at", "updated_at"})


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


class FieldError(ValueError):
    pass


@dataclass(frozen=True)
class Column:
    """A client-writable column: its SQL type and the check that normalises an uploaded value."""

    name: str
    sql_type: str
    check: Callable[[Any], Any]
    nullable: bool = True


@dataclass(frozen=True)
class Operation:
    op_id: int | None
    tx_id: int | None
    kind: str
    row_id: uuid.UUID
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    op_id: int | None
    tx_id: int | None
    op: str | None
    row_id: str | None
    code: str
    message: str


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
    for entry in batch:
        result = validate_entry(entry, user_id)
        if isinstance(result, Operation):
            operations.append(result)
        else:
            rejections.append(result)
    return operations, rejections


def validate_entry(entry: Any, user_id: uuid.UUID) -> Operation | Rejection:
    if not isinstance(entry, dict):
        return Rejection(None, None, None, None, "invalid_entry", "An entry must be a JSON object.")
    op_id, tx_id = _int64(entry.get("op_id")), _int64(entry.get("tx_id"))
    raw_op = entry.get("op")
    kind = raw_op.upper() if isinstance(raw_op, str) else None

    def reject(code: str, message: str) -> Rejection:
        shown_op = kind if kind in (PUT, PATCH, DELETE) else None
        return Rejection(op_id, tx_id, shown_op, _display(entry.get("id")), code, message)

    if kind not in (PUT, PATCH, DELETE):
        return reject("invalid_op", "op must be PUT, PATCH or DELETE.")
    if entry.get("type") != TABLE:
        return reject("unknown_table", f"Only the '{TABLE}' table accepts uploads.")
    row_id = _uuid(entry.get("id"))
    if row_id is None:
        return reject("invalid_id", "id must be a UUID string.")
    if kind == DELETE:
        return Operation(op_id, tx_id, kind, row_id)
    data = entry.get("data")
    if not isinstance(data, dict):
        return reject("invalid_data", f"data must be a JSON object for {kind}.")
    values, problems = validate_data(data, kind, row_id, user_id)
    if problems:
        code = problems[0][0]
        return reject(code, "; ".join(message for _, message in problems)[:2000])
    return Operation(op_id, tx_id, kind, row_id, values)


def validate_data(
    data: dict[str, Any], kind: str, row_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Normalised column values, and every (code, message) problem found."""
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    unknown: list[str] = []
    owner_text = str(user_id)  # SDKs echo the synced (canonical) text: compare before parsing
    for name, raw in data.items():
        column = COLUMNS.get(name)
        if column is None:
            if name in SERVER_SET_FIELDS:
                pass
            elif name == "id":
                if _uuid(raw) != row_id:
                    problems.append(("id_mismatch", "data.id differs from the entry's id."))
            elif name == "owner_user_id":
                if raw != owner_text and _uuid(raw) != user_id:
                    problems.append(
                        ("owner_mismatch", "owner_user_id must be your own user id (or left out).")
                    )
            else:
                unknown.append(_display(name) or "?")
        elif raw is None:
            if name == "is_favorite":
                values[name] = False
            elif column.nullable:
                values[name] = None
            else:
                problems.append(("invalid_value", f"{name}: cannot be null."))
        else:
            try:
                values[name] = column.check(raw)
            except FieldError as exc:
                problems.append(("invalid_value", f"{name}: {exc}"))
    if unknown:
        shown = ", ".join(sorted(unknown)[:5]) + (", ..." if len(unknown) > 5 else "")
        problems.insert(0, ("unknown_field", f"Unknown fields for {TABLE}: {shown}."))
    if kind == PUT and data.get("title") is None:
        problems.append(("missing_field", "title: required."))
    return values, problems


# --- value checks ------------------------------------------------------------------------------


def _text(max_length: int, min_length: int = 0) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not min_length <= len(value) <= max_length:
            raise FieldError(f"must be a string of {min_length} to {max_length} characters.")
        if "\x00" in value or not value.isascii():  # the common case needs no further check
            _clean_string(value)
        return value

    return check


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type; 3.0 is 3
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise FieldError(f"must be an integer from {low} to {high}.")
        return value

    return check


def _position(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise FieldError("must be a number from 0.0 to 1.0.")
    return float(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # SQLite has no boolean type
        return bool(value)
    raise FieldError("must be true, false, 1 or 0.")


def _reading_status(value: Any) -> str:
    if not isinstance(value, str) or value not in READING_STATUSES:
        raise FieldError("must be one of " + ", ".join(READING_STATUSES) + " or null.")
    return value


def _co_authors(value: Any) -> list[str]:
    value = _json_text(value)
    if not isinstance(value, list) or len(value) > CO_AUTHORS_MAX:
        raise FieldError(f"must be a JSON array of at most {CO_AUTHORS_MAX} strings.")
    for item in value:
        if not isinstance(item, str) or len(item) > SHORT_TEXT_MAX:
            raise FieldError(f"must hold strings of at most {SHORT_TEXT_MAX} characters.")
        _clean_string(item)
    return value


def _custom_metadata(value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # JSON text is measured as sent, without encoding it again
        size = len(value) if value.isascii() else len(value.encode("utf-8", "replace"))
        value = _json_text(value)
    else:
        size = -1
    if not isinstance(value, dict):
        raise FieldError("must be a JSON object.")
    _check_json(value, 0)
    if size < 0:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > CUSTOM_METADATA_MAX_BYTES:
        raise FieldError(f"must be at most {CUSTOM_METADATA_MAX_BYTES} bytes of JSON.")
    return value


def _json_text(value: Any) -> Any:
    """SQLite clients hold JSON columns as text and upload that text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        raise FieldError("is a string but not valid JSON.") from None


def _check_json(value: Any, depth: int) -> None:
    if depth > JSON_MAX_DEPTH:
        raise FieldError(f"must nest at most {JSON_MAX_DEPTH} levels deep.")
    if isinstance(value, str):
        _clean_string(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise FieldError("must not contain NaN or Infinity.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _clean_string(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _clean_string(value: str) -> None:
    """PostgreSQL stores neither NUL nor unpaired surrogates (which JSON escapes can produce)."""
    if "\x00" in value:
        raise FieldError("must not contain NUL characters.")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise FieldError("must be valid Unicode text.") from None


def _uuid(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _int64(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if INT8_MIN <= value <= INT8_MAX else None


def _display(value: Any, limit: int = 64) -> str | None:
    """A client value made safe to store and echo: bounded, no NUL, valid UTF-8."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    text = value[:limit].replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8")


COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("title", "text", _text(TITLE_MAX, 1), nullable=False),
        Column("subtitle", "text", _text(SHORT_TEXT_MAX)),
        Column("author", "text", _text(SHORT_TEXT_MAX)),
        Column("co_authors", "jsonb", _co_authors),
        Column("isbn", "text", _text(ISBN_MAX)),
        Column("isbn13", "text", _text(ISBN_MAX)),
        Column("publisher", "text", _text(SHORT_TEXT_MAX)),
        Column("language", "text", _text(LANGUAGE_MAX)),
        Column("page_count", "integer", _integer(0, INT4_MAX)),
        Column("description", "text", _text(DESCRIPTION_MAX)),
        Column("cover_image_url", "text", _text(URL_MAX)),
        Column("reading_status", "text", _reading_status),
        Column("current_page", "integer", _integer(0, INT4_MAX)),
        Column("current_position", "double precision", _position),
        Column("current_cfi", "text", _text(CFI_MAX)),
        Column("is_favorite", "boolean", _boolean, nullable=False),
        Column("rating", "integer", _integer(1, 5)),
        Column("custom_metadata", "jsonb", _custom_metadata),
    )
}
