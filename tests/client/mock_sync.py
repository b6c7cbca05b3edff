"""A small PowerSync-protocol sync service for client tests, served over real HTTP.

One bucket per user, full checkpoints every time, real SHA-256 op checksums, legacy write
checkpoints. Tests add rows with `put`/`remove`, push raw lines (`push_line`) and end streams
(`end_streams`). It stands in for the development sync service where a test is about the
protocol driver rather than the whole stack.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from papyrus.client import Credentials, PowerSyncDatabase, TransientError

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "powersync-captures"


def op_checksum(object_type: str, object_id: str, data: str) -> int:
    digest = hashlib.sha256(f"put.{object_type}.{object_id}.{data}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def remove_checksum(subkey: str) -> int:
    return int.from_bytes(hashlib.sha256(f"delete.{subkey}".encode()).digest()[:4], "little")


def signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


def capture_lines(name: str) -> list[str]:
    with open(CAPTURES / name) as fh:
        text = fh.read()
    if text.startswith("HTTP/"):
        text = text.split("\n\n", 1)[1]
    return [line for line in text.splitlines() if line.strip()]


@dataclass
class _Stream:
    user: str
    client_id: str
    queue: asyncio.Queue[Any]
    loop: asyncio.AbstractEventLoop


@dataclass
class MockSyncService:
    ops: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rows: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    write_checkpoints: dict[tuple[str, str], int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    replay: list[str] | None = None  # when set, every stream serves these lines and ends
    down: bool = False
    last_op: int = 0
    _streams: list[_Stream] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- test API -----------------------------------------------------------------------

    def issue_token(self, user: str) -> str:
        token = f"tok-{user}-{len(self.tokens)}"
        self.tokens[token] = user
        return token

    def bucket(self, user: str) -> str:
        return f'1#books|0["{user}"]'

    def put(self, user: str, table: str, row_id: str, values: dict[str, Any]) -> None:
        with self._lock:
            data = json.dumps({"id": row_id, **values}, separators=(",", ":"))
            self.last_op += 1
            self.ops.setdefault(user, []).append(
                {
                    "op_id": str(self.last_op),
                    "op": "PUT",
                    "object_type": table,
                    "object_id": row_id,
                    "subkey": row_id,
                    "data": data,
                    "checksum": op_checksum(table, row_id, data),
                }
            )
            self.rows[(user, table, row_id)] = {"id": row_id, **values}
        self._notify(user)

    def remove(self, user: str, table: str, row_id: str) -> None:
        with self._lock:
            self.last_op += 1
            self.ops.setdefault(user, []).append(
                {
                    "op_id": str(self.last_op),
                    "op": "REMOVE",
                    "object_type": table,
                    "object_id": row_id,
                    "subkey": row_id,
                    "checksum": remove_checksum(row_id),
                }
            )
            self.rows.pop((user, table, row_id), None)
        self._notify(user)

    def row(self, user: str, table: str, row_id: str) -> dict[str, Any] | None:
        return self.rows.get((user, table, row_id))

    def push_line(self, line: dict[str, Any] | str) -> None:
        text = line if isinstance(line, str) else json.dumps(line)
        for stream in list(self._streams):
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, ("line", text))

    def end_streams(self) -> None:
        for stream in list(self._streams):
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, ("end", None))

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def _notify(self, user: str) -> None:
        for stream in list(self._streams):
            if stream.user == user:
                stream.loop.call_soon_threadsafe(stream.queue.put_nowait, ("changed", None))

    # -- protocol -----------------------------------------------------------------------

    def _checkpoint(self, user: str, client_id: str) -> tuple[dict[str, Any], list[dict]]:
        with self._lock:
            ops = list(self.ops.get(user, []))
            last = str(self.last_op)
            wc = self.write_checkpoints.get((user, client_id))
        total = signed32(sum(op["checksum"] for op in ops))
        body: dict[str, Any] = {
            "last_op_id": last,
            "buckets": [
                {
                    "bucket": self.bucket(user),
                    "checksum": total,
                    "count": len(ops),
                    "priority": 3,
                    "subscriptions": [{"default": 0}],
                }
            ],
            "streams": [{"name": "books", "is_default": True, "errors": []}],
        }
        if wc is not None:
            body["write_checkpoint"] = str(wc)
        return {"checkpoint": body}, ops

    def _auth(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme not in ("Token", "Bearer"):
            return None
        return self.tokens.get(token)

    async def stream(self, request: Request) -> Response:
        if self.down:
            return JSONResponse({"error": "down"}, status_code=503)
        body = await request.json()
        user = self._auth(request)
        if user is None:
            return JSONResponse({"error": {"code": "PSYNC_S2106", "status": 401}}, 401)
        self.requests.append(body)
        client_id = body.get("client_id", "")
        after = {b["name"]: int(b["after"]) for b in body.get("buckets", [])}
        stream = _Stream(user, client_id, asyncio.Queue(), asyncio.get_running_loop())

        async def lines() -> Any:
            if self.replay is not None:
                for line in self.replay:
                    yield line + "\n"
                return
            self._streams.append(stream)
            try:
                sent = after.get(self.bucket(user), 0)
                event: Any = ("changed", None)
                while True:
                    kind, payload = event
                    if kind == "end":
                        return
                    if kind == "line":
                        yield payload + "\n"
                    else:
                        checkpoint, ops = self._checkpoint(user, client_id)
                        yield json.dumps(checkpoint) + "\n"
                        new = [op for op in ops if int(op["op_id"]) > sent]
                        for start in range(0, len(new), 1000):
                            chunk = new[start : start + 1000]
                            yield (
                                json.dumps({"data": {"bucket": self.bucket(user), "data": chunk}})
                                + "\n"
                            )
                        last = checkpoint["checkpoint"]["last_op_id"]
                        yield json.dumps({"checkpoint_complete": {"last_op_id": last}}) + "\n"
                        sent = int(last)
                    event = await stream.queue.get()
            finally:
                self._streams.remove(stream)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def write_checkpoint(self, request: Request) -> Response:
        if self.down:
            return JSONResponse({"error": "down"}, status_code=503)
        user = self._auth(request)
        if user is None:
            return JSONResponse({"error": {"code": "PSYNC_S2106", "status": 401}}, 401)
        key = (user, request.query_params.get("client_id", ""))
        with self._lock:
            self.write_checkpoints[key] = self.write_checkpoints.get(key, 0) + 1
            value = self.write_checkpoints[key]
        self._notify(user)
        return JSONResponse({"data": {"write_checkpoint": str(value)}})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/sync/stream", self.stream, methods=["POST"]),
                Route("/write-checkpoint2.json", self.write_checkpoint, methods=["GET"]),
            ]
        )


class MockConnector:
    """Applies uploads straight to the mock service (what the Papyrus API does for real)."""

    def __init__(self, service: MockSyncService, user: str, endpoint: str) -> None:
        self.service = service
        self.user = user
        self.endpoint = endpoint
        self.fetches = 0
        self.uploads: list[list[dict[str, Any]]] = []
        self.fail_uploads = 0
        self.signed_in = True

    def fetch_credentials(self) -> Credentials | None:
        self.fetches += 1
        if not self.signed_in:
            return None
        return Credentials(self.endpoint, self.service.issue_token(self.user))

    def upload_data(self, database: PowerSyncDatabase) -> None:
        tx = database.get_next_crud_transaction()
        if tx is None:
            return
        if self.fail_uploads:
            self.fail_uploads -= 1
            raise TransientError("backend unavailable (test)")
        self.uploads.append([e.to_json() for e in tx.crud])
        for e in tx.crud:
            if e.op == "DELETE":
                self.service.remove(self.user, e.table, e.id)
            else:
                current = self.service.row(self.user, e.table, e.id) or {}
                merged = {k: v for k, v in {**current, **(e.op_data or {})}.items() if k != "id"}
                self.service.put(self.user, e.table, e.id, merged)
        tx.complete()
