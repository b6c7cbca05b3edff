"""Checking written values against the declarations: one implementation for the server's upload
validation and the client's write-time validation, so a value the client accepts is a value the
server accepts.

Values arrive in either encoding a client may hold: JSON types from an upload, or SQLite's (0/1
for booleans, JSON text for JSON columns). `check_value` returns the normalised form: `bool`,
`int`, `float`, `str` (canonical UUIDs, ISO 8601 timestamps with an offset, `YYYY-MM-DD` dates)
or the parsed JSON document. `to_local`/`from_local` convert to and from SQLite's encoding.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from papyrus.contract.declare import (
    ID,
    OWNER,
    Column,
    JsonObject,
    Location,
    StringList,
    Table,
    Type,
)

PUT, PATCH, DELETE = "PUT", "PATCH", "DELETE"
MAX_UUID_TEXT = 64
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_LOCATION_KEYS = frozenset({"cfi", "page", "fraction"})


class FieldError(ValueError):
    """One value breaks its column's declaration; the message names no submitted value."""


@dataclass(frozen=True)
class Problem:
    """Why a row cannot be written: a stable `code` and a message naming the column."""

    code: str
    message: str


def check_value(column: Column, value: Any) -> Any:
    """The normalised form of a non-null `value` for `column`, or FieldError."""
    checker = _CHECKERS[column.type]
    return checker(column, value)


def validate_row(
    table: Table,
    op: str,
    row_id: str,
    data: Mapping[str, Any],
    owner: str | None = None,
) -> tuple[dict[str, Any], list[Problem]]:
    """The normalised client-writable values of a PUT (a whole row) or PATCH (changed columns),
    and every problem found. `row_id` is canonical (see `check_row_id`).

    `id` and `owner_user_id` may be echoed in `data` (SDKs upload every column they hold) but
    must match `row_id` and `owner`; stamped columns are accepted and dropped. A PATCH may not
    touch immutable columns. Cross-row rules (references, uniqueness, closed rows) need the
    stored rows and are the caller's.
    """
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    unknown: list[str] = []
    for name, raw in data.items():
        if name == ID:
            if raw is not None and check_row_id(table, raw) != row_id:
                problems.append(Problem("id_mismatch", "data.id differs from the entry's id."))
            continue
        if name == OWNER:
            if raw is not None and owner is not None and _uuid(raw) != _uuid(owner):
                problems.append(
                    Problem("owner_mismatch", f"{OWNER} must be your own user id (or left out).")
                )
            continue
        try:
            column = table.column(name)
        except KeyError:
            unknown.append(_shown(name))
            continue
        if column.server_set:
            continue
        if op == PATCH and column.immutable:
            problems.append(Problem("immutable_field", f"{name}: cannot change once set."))
            continue
        if raw is None:
            if column.default is not None:
                values[name] = column.default
            elif column.required:
                problems.append(Problem("invalid_value", f"{name}: cannot be null."))
            else:
                values[name] = None
            continue
        try:
            values[name] = check_value(column, raw)
        except FieldError as exc:
            problems.append(Problem("invalid_value", f"{name}: {exc}"))
    if unknown:
        shown = ", ".join(sorted(unknown)[:5]) + (", ..." if len(unknown) > 5 else "")
        problems.insert(0, Problem("unknown_field", f"Unknown fields for {table.name}: {shown}."))
    if op == PUT:
        for column in table.writable_columns:
            if column.name in values or column.name in data:
                continue
            if column.default is not None:
                values[column.name] = column.default
            elif column.required:
                problems.append(Problem("missing_field", f"{column.name}: required."))
    if not problems:
        problems += check_rules(table, values)
        expected = table.derived_id(values) if op == PUT else None
        if expected is not None and row_id != expected:
            first, second = table.id_from or ("", "")
            problems.append(Problem("invalid_id", f"{table.name} ids are <{first}>:<{second}>."))
    return values, problems


def check_rules(table: Table, row: Mapping[str, Any]) -> list[Problem]:
    """The table's row rules over the columns present in `row` (normalised values)."""
    problems = []
    for rule in table.checks:
        earlier, later = row.get(rule.earlier), row.get(rule.later)
        if earlier is not None and later is not None and _order_key(earlier) > _order_key(later):
            problems.append(
                Problem("invalid_value", f"{rule.later}: must not be before {rule.earlier}.")
            )
    return problems


def check_row_id(table: Table, row_id: Any) -> str | None:
    """The canonical row id, or None when it is not a valid id for `table`."""
    if table.id_from is None:
        return _uuid(row_id)
    if not isinstance(row_id, str) or len(row_id) > 2 * MAX_UUID_TEXT + 1:
        return None
    first, sep, second = row_id.partition(":")
    a, b = _uuid(first), _uuid(second)
    if not sep or a is None or b is None:
        return None
    return f"{a}:{b}"


def to_local(column: Column, value: Any) -> Any:
    """A normalised value in SQLite's encoding (what the local database stores)."""
    if value is None:
        return None
    if column.type is Type.BOOLEAN:
        return 1 if value else 0
    if column.type is Type.JSON:
        return value if isinstance(value, str) else _compact(value)
    return value


def from_local(column: Column, value: Any) -> Any:
    """A value read from SQLite, in the normalised form (booleans, parsed JSON)."""
    if value is None:
        return None
    if column.type is Type.BOOLEAN:
        return bool(value)
    if column.type is Type.JSON and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


# --- per type ------------------------------------------------------------------------------------


def _text(column: Column, value: Any) -> str:
    if column.choices:
        if not isinstance(value, str) or value not in column.choices:
            raise FieldError("must be one of " + ", ".join(column.choices) + ".")
        return value
    low, high = column.length or (0, 0)
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise FieldError(f"must be a string of {low} to {high} characters.")
    clean_string(value)
    if column.pattern is not None and not re.fullmatch(column.pattern, value):
        raise FieldError(f"must look like {column.doc or column.pattern}.")
    return value


def _integer(column: Column, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type; 3.0 is 3
    low, high = column.range or (-(2**31), 2**31 - 1)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FieldError(f"must be an integer from {_num(low)} to {_num(high)}.")
    return value


def _real(column: Column, value: Any) -> float:
    low, high = column.range or (-math.inf, math.inf)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise FieldError(f"must be a number from {_num(low)} to {_num(high)}.")
    return float(value)


def _boolean(column: Column, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # SQLite has no boolean type
        return bool(value)
    raise FieldError("must be true, false, 1 or 0.")


def _timestamp(column: Column, value: Any) -> str:
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise FieldError("must be an ISO 8601 timestamp with a UTC offset or Z.")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FieldError("must be an ISO 8601 timestamp with a UTC offset or Z.") from None
    if moment.tzinfo is None:
        raise FieldError("must include a UTC offset or Z.")
    return moment.isoformat()


def _date(column: Column, value: Any) -> str:
    if not isinstance(value, str) or not _DATE.match(value):
        raise FieldError("must be a date, YYYY-MM-DD.")
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise FieldError("must be a date, YYYY-MM-DD.") from None


def _id(column: Column, value: Any) -> str:
    parsed = _uuid(value)
    if parsed is None:
        raise FieldError("must be a UUID.")
    return parsed


def _json(column: Column, value: Any) -> Any:
    shape = column.json
    if isinstance(value, str):  # SQLite clients hold JSON as text and upload that text
        size = len(value) if value.isascii() else len(value.encode("utf-8", "replace"))
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise FieldError("is a string but not valid JSON.") from None
    else:
        size = -1
    if isinstance(shape, StringList):
        return _string_list(shape, value)
    if isinstance(shape, Location):
        return _location(shape, value)
    assert isinstance(shape, JsonObject)
    if not isinstance(value, dict):
        raise FieldError("must be a JSON object.")
    _check_json(value, 0, shape.max_depth)
    if size < 0:
        size = len(_compact(value).encode())
    if size > shape.max_bytes:
        raise FieldError(f"must be at most {shape.max_bytes} bytes of JSON.")
    return value


def _string_list(shape: StringList, value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > shape.max_items:
        raise FieldError(f"must be a JSON array of at most {shape.max_items} strings.")
    for item in value:
        if not isinstance(item, str) or len(item) > shape.max_length:
            raise FieldError(f"must hold strings of at most {shape.max_length} characters.")
        clean_string(item)
    return value


def _location(shape: Location, value: Any) -> dict[str, Any]:
    message = 'must be an object with "cfi", "page" and/or "fraction".'
    if not isinstance(value, dict) or not value or set(value) - _LOCATION_KEYS:
        raise FieldError(message)
    cfi, page, fraction = value.get("cfi"), value.get("page"), value.get("fraction")
    if cfi is not None and (not isinstance(cfi, str) or not 0 < len(cfi) <= shape.max_cfi_length):
        raise FieldError(f"cfi must be a string of 1 to {shape.max_cfi_length} characters.")
    if cfi is not None:
        clean_string(cfi)
    if isinstance(page, float) and page.is_integer():
        page = int(page)
    if page is not None and (
        isinstance(page, bool) or not isinstance(page, int) or not 0 <= page <= 2**31 - 1
    ):
        raise FieldError("page must be a non-negative integer.")
    if fraction is not None and (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not math.isfinite(fraction)
        or not 0 <= fraction <= 1
    ):
        raise FieldError("fraction must be a number from 0 to 1.")
    out = {k: v for k, v in (("cfi", cfi), ("page", page), ("fraction", fraction)) if v is not None}
    if not out:
        raise FieldError(message)
    return out


_CHECKERS = {
    Type.TEXT: _text,
    Type.INTEGER: _integer,
    Type.REAL: _real,
    Type.BOOLEAN: _boolean,
    Type.TIMESTAMP: _timestamp,
    Type.DATE: _date,
    Type.ID: _id,
    Type.JSON: _json,
}


# --- helpers -------------------------------------------------------------------------------------


def clean_string(value: str) -> None:
    """PostgreSQL stores neither NUL nor unpaired surrogates (which JSON escapes can produce)."""
    if "\x00" in value:
        raise FieldError("must not contain NUL characters.")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise FieldError("must be valid Unicode text.") from None


def _check_json(value: Any, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise FieldError(f"must nest at most {max_depth} levels deep.")
    if isinstance(value, str):
        clean_string(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise FieldError("must not contain NaN or Infinity.")
    elif isinstance(value, dict):
        for key, item in value.items():
            clean_string(key)
            _check_json(item, depth + 1, max_depth)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1, max_depth)


def _uuid(value: Any) -> str | None:
    """The canonical text of a UUID (lower case, hyphenated), or None."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str) or len(value) > MAX_UUID_TEXT:
        return None
    if _CANONICAL_UUID.match(value):  # what clients send, checked without parsing
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _order_key(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return value
    return value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _shown(name: Any) -> str:
    """A client-sent name made safe to echo: bounded, no NUL, valid UTF-8."""
    text = str(name)[:64].replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
