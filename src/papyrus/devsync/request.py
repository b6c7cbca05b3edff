"""What `/sync/stream` and `/write-checkpoint2.json` accept, checked before the token.

The PowerSync service merges the query string and a JSON object body into one parameter object
and validates it against the JSON Schema its codecs generate (powersync-ja/powersync-service,
`packages/service-core/src/util/protocol-types.ts` `StreamingSyncRequest`, and
`routes/endpoints/checkpointing.ts`), extra properties allowed, before it looks at the token.
A failure is `400 PSYNC_S2001 "Validation failed"` with ajv's messages in `details`; an
oversized, empty or non-JSON body is Fastify's 413/400/415. The same schemas are written out
here and answered with the same codes and messages, so a client that passes here is not
refused there.

This service is stricter than the real one where the real one would accept a request and then
fail on it, or silently ignore it:
- a body that is JSON but not an object (the service ignores it and syncs from scratch), and
  a body that is not `application/json` (the service ignores `text/plain` bodies too);
- a bucket `after` that is not a decimal 64-bit op id (`BigInt()` throws mid-stream there);
- strings PostgreSQL cannot store (NUL, unpaired surrogates) anywhere in the request, and a
  `client_id` longer than `MAX_CLIENT_ID` characters (it keys write checkpoints, in an index).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

# Fastify's default `bodyLimit`, which the service does not change.
BODY_LIMIT = 1024 * 1024
MAX_CLIENT_ID = 256
_OP_ID = re.compile(r"-?[0-9]{1,19}")
_INT64 = (-(2**63), 2**63 - 1)
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")

Schema = dict[str, Any]


def _obj(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required)}


def _record(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_STRING: Schema = {"type": "string"}
_BOOLEAN: Schema = {"type": "boolean"}

STREAMING_SYNC_REQUEST = _obj(
    {
        "buckets": {
            "type": "array",
            "items": _obj({"name": _STRING, "after": _STRING}, ("name", "after")),
        },
        "only": {"type": "array", "items": _STRING},
        "include_checksum": _BOOLEAN,
        "raw_data": _BOOLEAN,
        "parameters": _record({}),
        "app_metadata": _record(_STRING),
        "client_id": _STRING,
        "streams": _obj(
            {
                "include_defaults": _BOOLEAN,
                "subscriptions": {
                    "type": "array",
                    "items": _obj(
                        {
                            "stream": _STRING,
                            "parameters": _nullable(_record({})),
                            "override_priority": _nullable({"type": "number"}),
                        },
                        ("stream", "parameters", "override_priority"),
                    ),
                },
            },
            ("subscriptions",),
        ),
    }
)
WRITE_CHECKPOINT_REQUEST = _obj({"client_id": _STRING})


class RequestError(Exception):
    """A refused request, in the service's error shape."""

    def __init__(
        self, status: int, code: str, description: str, *, name: str, details: str | None = None
    ) -> None:
        super().__init__(f"[{code}] {description}")
        self.status, self.code, self.description = status, code, description
        self.name, self.details = name, details

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "name": self.name,
            "code": self.code,
            "status": self.status,
            "description": self.description,
        }
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class ValidationError(RequestError):
    """The service's `ValidationError`: the messages go to `details` as a JSON array."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(
            400,
            "PSYNC_S2001",
            "Validation failed",
            name="ValidationError",
            details=json.dumps(errors, separators=(",", ":"), ensure_ascii=False),
        )
        self.errors = errors


def _fastify(status: int, code: str, description: str) -> RequestError:
    return RequestError(status, code, description, name="FastifyError")


# -- the body ---------------------------------------------------------------------------------


async def read_json_body(request: Request, limit: int = BODY_LIMIT) -> Any:
    """The parsed body (`{}` when there is none); never reads more than `limit` bytes."""
    headers = request.headers
    has_body = "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
    content_type = headers.get("content-type")
    if content_type is None and not has_body:
        return {}
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise _fastify(
            415, "FST_ERR_CTP_INVALID_MEDIA_TYPE", f"Unsupported Media Type: {media_type}"
        )
    too_large = _fastify(413, "FST_ERR_CTP_BODY_TOO_LARGE", "Request body is too large")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise _fastify(
            400,
            "FST_ERR_CTP_EMPTY_JSON_BODY",
            "Body cannot be empty when content-type is set to 'application/json'",
        )
    try:
        return json.loads(
            raw.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_secure_object
        )
    except (ValueError, RecursionError):  # also UnicodeDecodeError
        raise _fastify(
            400,
            "FST_ERR_CTP_INVALID_JSON_BODY",
            "Body is not valid JSON but content-type is set to 'application/json'",
        ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _secure_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Fastify's parser refuses prototype-poisoning keys; so does this one."""
    obj = dict(pairs)
    if "__proto__" in obj or (
        isinstance(obj.get("constructor"), dict) and "prototype" in obj["constructor"]
    ):
        raise ValueError("forbidden prototype property")
    return obj


def merged_params(request: Request, body: Any) -> dict[str, Any]:
    """Query parameters (repeated ones as lists), then the body's fields over them."""
    params: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in params:
            previous = params[key]
            params[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            params[key] = value
    if not isinstance(body, dict):
        raise ValidationError([": type must be object"])
    return {**params, **body}


# -- the schema -------------------------------------------------------------------------------


def schema_errors(schema: Schema, value: Any, path: str = "") -> list[str]:
    """ajv's messages (as the service formats them) for the JSON Schema subset its codecs
    generate: type, required, properties, additionalProperties, items, anyOf."""
    if "anyOf" in schema:
        branches = [schema_errors(s, value, path) for s in schema["anyOf"]]
        if any(not errors for errors in branches):
            return []
        return [e for errors in branches for e in errors] + [
            f"{path}: anyOf must match a schema in anyOf"
        ]
    expected = schema.get("type")
    if expected is not None and not _is_type(value, expected):
        return [f"{path}: type must be {expected}"]
    errors: list[str] = []
    if expected == "object":
        errors += [
            f"{path} must have required property '{key}'"
            for key in schema.get("required", ())
            if key not in value
        ]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += schema_errors(sub, value[key], f"{path}/{_pointer(key)}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in schema.get("properties", {}):
                    errors += schema_errors(extra, item, f"{path}/{_pointer(key)}")
    elif expected == "array":
        for index, item in enumerate(value):
            errors += schema_errors(schema["items"], item, f"{path}/{index}")
    return errors


def _is_type(value: Any, expected: str) -> bool:
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    python = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    return isinstance(value, python[expected])


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


# -- the checks this service adds ---------------------------------------------------------------


def _text_errors(value: Any, path: str = "") -> list[str]:
    """Every key and string must be text PostgreSQL can store."""
    problem = "must be text without NUL characters or unpaired surrogates"
    if isinstance(value, str):
        return [f"{path}: {problem}"] if _BAD_TEXT.search(value) else []
    errors: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}/{_pointer(key)}"
            if _BAD_TEXT.search(key):
                errors.append(f"{path}: keys {problem}")
            errors += _text_errors(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors += _text_errors(item, f"{path}/{index}")
    return errors


def _client_id_errors(params: Mapping[str, Any]) -> list[str]:
    client_id = params.get("client_id")
    if isinstance(client_id, str) and len(client_id) > MAX_CLIENT_ID:
        return [f"/client_id: must be at most {MAX_CLIENT_ID} characters"]
    return []


def _op_id_ok(text: str) -> bool:
    return _OP_ID.fullmatch(text) is not None and _INT64[0] <= int(text) <= _INT64[1]


def validate_sync_request(params: dict[str, Any]) -> dict[str, Any]:
    """The request as the service would accept it, or a ValidationError."""
    errors = schema_errors(STREAMING_SYNC_REQUEST, params)
    if errors:
        raise ValidationError(errors)
    errors = _text_errors(params) + _client_id_errors(params)
    for index, bucket in enumerate(params.get("buckets") or ()):
        if not _op_id_ok(bucket["after"]):
            errors.append(f"/buckets/{index}/after: must be a decimal op id (a 64-bit integer)")
    if errors:
        raise ValidationError(errors)
    return params


def validate_write_checkpoint_request(params: dict[str, Any]) -> str:
    """The client id of a valid `/write-checkpoint2.json` request ("" when not given)."""
    errors = schema_errors(WRITE_CHECKPOINT_REQUEST, params)
    if not errors:
        errors = _text_errors({"client_id": params.get("client_id", "")})
        errors += _client_id_errors(params)
    if errors:
        raise ValidationError(errors)
    client_id: str = params.get("client_id", "")  # a string: checked above
    return client_id
