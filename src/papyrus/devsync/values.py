"""Postgres values to PowerSync sync values, and the JSON texts built from them.

The real service decodes each column's text form by type OID (bool -> 1/0, integers -> INTEGER,
float4/float8 -> REAL, json/jsonb -> their text, timestamps -> ISO 8601 text, everything else,
numeric included, -> the text itself) and serialises row data with `JSONBig.stringify`:
JavaScript's number formatting, plus `.0` after a REAL whose text is all digits, so a REAL keeps
its type (`1.0`, not `1`). Op checksums hash that exact JSON text, so it has to match byte for
byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Union

SqliteValue = Union[str, int, float, bytes, None]  # noqa: UP007 (used at runtime as an alias)

# Namespace of the service's row-identity UUIDs (`ID_NAMESPACE` in service-core utils).
ID_NAMESPACE = uuid.UUID("a396dd91-09fc-4017-a28d-3df722f651e9")

_BOOL, _BYTEA, _INT8, _INT2, _INT4, _OID = 16, 17, 20, 21, 23, 26
_JSON, _JSONB, _FLOAT4, _FLOAT8 = 114, 3802, 700, 701
_DATE, _TIME, _TIMESTAMP, _TIMESTAMPTZ, _PG_LSN = 1082, 1083, 1114, 1184, 3220

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
json_text = _encoder.encode
"""Compact JSON like JavaScript's JSON.stringify (for values without problematic floats)."""

_TIME_RE = re.compile(r"^([\d\-]+) ([\d:]+)(?:\.(\d+))?([+-][\d:]+)?$")
_SAFE_INT = 2**53
_DIGITS = re.compile(r"-?\d+")


def js_number(value: float) -> str:
    """Format a float the way JavaScript's Number#toString (and JSON.stringify) does."""
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < _SAFE_INT:
        return str(int(value))
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)  # not NaN or infinite: checked above
    digit_str = "".join(map(str, digits)).rstrip("0") or "0"
    exponent += len(digits) - len(digit_str)
    k = len(digit_str)
    n = k + exponent  # position of the decimal point relative to the digits
    prefix = "-" if sign else ""
    if k <= n <= 21:
        body = digit_str + "0" * (n - k)
    elif 0 < n <= 21:
        body = f"{digit_str[:n]}.{digit_str[n:]}"
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digit_str
    else:
        e = n - 1
        mantissa = digit_str if k == 1 else f"{digit_str[0]}.{digit_str[1:]}"
        body = f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"
    return prefix + body


def real_json(value: float) -> str:
    """A REAL in row data, as the service's `JSONBig.stringify` writes it: JavaScript's text,
    with `.0` appended when that text is all digits (powersync-ja/powersync-service,
    packages/jsonbig/src/json.ts), so 1.0 stays `1.0` while an INTEGER 1 is `1`."""
    text = js_number(value)
    return text + ".0" if _DIGITS.fullmatch(text) else text


def _float_needs_js_format(value: float) -> bool:
    """True when Python's repr differs from `real_json` (an exponent, or -0.0)."""
    if value == 0:
        return math.copysign(1.0, value) < 0
    return not 1e-4 <= abs(value) < 1e16


def _row_value(value: SqliteValue) -> str:
    if isinstance(value, float):
        return real_json(value)
    return json_text(value)


def row_json(row: dict[str, SqliteValue]) -> str:
    """The row's data text (`JSONBig.stringify` of the output row); blobs are left out."""
    for v in row.values():
        if isinstance(v, bytes) or (isinstance(v, float) and _float_needs_js_format(v)):
            break
    else:
        return json_text(row)
    parts = [f"{json_text(k)}:{_row_value(v)}" for k, v in row.items() if not isinstance(v, bytes)]
    return "{" + ",".join(parts) + "}"


def bucket_parameters_json(values: Sequence[SqliteValue]) -> str:
    """Serialised bucket parameters: REAL and INTEGER forms of one number look the same."""
    parts = (js_number(v) if isinstance(v, float) else json_text(v) for v in values)
    return "[" + ",".join(parts) + "]"


def _decode_timestamptz(text: str) -> str | None:
    # Fast path: the replication session runs with TimeZone=UTC and DateStyle=ISO.
    if len(text) >= 22 and text.endswith("+00") and text[10] == " ":
        if len(text) == 22:
            return f"{text[:10]}T{text[11:19]}.000000Z"
        if text[19] == ".":
            return f"{text[:10]}T{text[11:19]}.{text[20:-3][:6].ljust(6, '0')}Z"
    if text == "infinity":
        return "9999-12-31T23:59:59.000000Z"
    if text == "-infinity":
        return "0000-01-01T00:00:00.000000Z"
    m = _TIME_RE.match(text)
    if m is None:
        return None
    date, time, fraction, offset = m.groups()
    fraction = (fraction or "")[:6].ljust(6, "0")
    if offset in (None, "+00", "+00:00", "-00"):
        return f"{date}T{time}.{fraction}Z"
    try:
        local = datetime.fromisoformat(f"{date}T{time}")
    except ValueError:
        return None
    sign = -1 if offset[0] == "-" else 1
    parts = [int(p) for p in offset[1:].split(":")] + [0, 0]
    delta = timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2])
    utc = (local - sign * delta).replace(tzinfo=UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{fraction}Z"


def _decode_timestamp(text: str) -> str | None:
    if text == "infinity":
        return "9999-12-31T23:59:59.000000"
    if text == "-infinity":
        return "0000-01-01T00:00:00.000000"
    m = _TIME_RE.match(text)
    if m is None:
        return None
    date, time, fraction, _ = m.groups()
    return f"{date}T{time}.{(fraction or '')[:6].ljust(6, '0')}"


def _decode_time(text: str) -> str | None:
    m = re.match(r"^([\d:]+)(?:\.(\d+))?$", text)
    if m is None:
        return None
    return f"{m.group(1)}.{(m.group(2) or '')[:6].ljust(6, '0')}"


def _decode_date(text: str) -> str:
    return {"infinity": "9999-12-31", "-infinity": "0000-01-01"}.get(text, text)


def _decode_float(text: str) -> float | None:
    """A REAL even when integral: the service's `Number(text)` stays a number, never a bigint."""
    value = float(text)
    if not math.isfinite(value):
        return None  # JSON.stringify writes NaN and Infinity as null
    return value


def _decode_bytea(text: str) -> bytes:
    return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()


def _decode_lsn(text: str) -> str:
    high, low = text.split("/")
    return f"{high.zfill(8)}/{low.zfill(8)}"


Decoder = Callable[[str], SqliteValue]

_DECODERS: dict[int, Decoder] = {
    _BOOL: lambda t: 1 if t == "t" else 0,
    _BYTEA: _decode_bytea,
    _INT2: int,
    _INT4: int,
    _INT8: int,
    _OID: int,
    _FLOAT4: _decode_float,
    _FLOAT8: _decode_float,
    _DATE: _decode_date,
    _TIME: _decode_time,
    _TIMESTAMP: _decode_timestamp,
    _TIMESTAMPTZ: _decode_timestamptz,
    _PG_LSN: _decode_lsn,
}


def decoder_for(type_oid: int) -> Decoder | None:
    """The decoder for a column type, or None when the text form is the value (text, uuid,
    json, jsonb, numeric, enums, arrays, ...)."""
    return _DECODERS.get(type_oid)


def decode_value(text: str | None, type_oid: int) -> SqliteValue:
    if text is None:
        return None
    decoder = _DECODERS.get(type_oid)
    return text if decoder is None else decoder(text)


def _bson_element(name: str, value: SqliteValue) -> bytes:
    key = name.encode() + b"\x00"
    if isinstance(value, str):
        data = value.encode() + b"\x00"
        return b"\x02" + key + struct.pack("<i", len(data)) + data
    if isinstance(value, bool | int):
        return b"\x12" + key + struct.pack("<q", int(value))
    if isinstance(value, float):
        return b"\x01" + key + struct.pack("<d", value)
    if isinstance(value, bytes):
        return b"\x05" + key + struct.pack("<i", len(value)) + b"\x00" + value
    return b"\x0a" + key


def _bson_document(values: dict[str, SqliteValue]) -> bytes:
    body = b"".join(_bson_element(k, v) for k, v in values.items()) + b"\x00"
    return struct.pack("<i", len(body) + 4) + body


def replica_id_uuid(identity: dict[str, SqliteValue]) -> str:
    """UUIDv5 of the BSON document of the replica-identity columns, as the service derives it."""
    digest = bytearray(hashlib.sha1(ID_NAMESPACE.bytes + _bson_document(identity)).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def row_subkey(source_table_id: str, identity: dict[str, SqliteValue]) -> str:
    """`<source table id>/<row uuid>`: the subkey a PUT carries and its REMOVE repeats."""
    return f"{source_table_id}/{replica_id_uuid(identity)}"
