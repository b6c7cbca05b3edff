"""The Python client asks for a sync stream exactly as `@powersync/node` does.

The PowerSync service validates the `/sync/stream` body strictly (a `"parameters": null` is a
400), so a shape the official SDK never sends is a shape that may fail in production. Both
clients sync through a recording proxy in front of the same development sync service; their
request bodies must have the same keys with the same JSON types, recursively.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from typing import Any

import httpx
import pytest

from papyrus.client import AuthProvider, SyncOptions
from tests.client.conftest import eventually
from tests.client.stack import STACK_SYNC, Stack
from tests.conftest import LiveServer
from tests.e2e.node_client import NODE_SDK, NodeClient

pytestmark = pytest.mark.node

PASSWORD = "correct horse battery"
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


class RecordingProxy:
    """An ASGI reverse proxy to the sync service that records every `/sync/stream` body.

    A client's first stream is ended after its first `checkpoint_complete`, so the client
    reconnects, and its second request lists the buckets it now holds."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.bodies: list[dict[str, Any]] = []
        self._cut: set[str] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        forward = asyncio.create_task(self._forward(scope, body, send))
        disconnect = asyncio.create_task(self._disconnected(receive))
        _, pending = await asyncio.wait({forward, disconnect}, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    async def _disconnected(receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _forward(self, scope: dict[str, Any], body: bytes, send: Any) -> None:
        headers = {
            k.decode(): v.decode() for k, v in scope["headers"] if k.decode() not in _HOP_HEADERS
        }
        query = scope["query_string"].decode()
        url = f"{self.upstream}{scope['path']}" + (f"?{query}" if query else "")
        cut_after_complete = False
        if scope["path"] == "/sync/stream":
            request = json.loads(body)
            self.bodies.append(request)
            cut_after_complete = request.get("client_id") not in self._cut
            self._cut.add(request.get("client_id"))
        async with (
            httpx.AsyncClient(timeout=None) as client,
            client.stream(scope["method"], url, headers=headers, content=body) as response,
        ):
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.encode(), v.encode())
                        for k, v in response.headers.items()
                        if k not in _HOP_HEADERS
                    ],
                }
            )
            async for line in response.aiter_lines():
                chunk = (line + "\n").encode()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if cut_after_complete and "checkpoint_complete" in line:
                    break
        await send({"type": "http.response.body", "body": b""})


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively; a list's shape is the set of its items' shapes."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        shapes: list[Any] = []
        for item in map(shape, value):
            if item not in shapes:
                shapes.append(item)
        return ["list", *shapes]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def test_shape_sees_types_keys_and_list_items() -> None:
    assert shape({"parameters": {}}) != shape({"parameters": None})
    assert shape({"a": True}) != shape({"a": 1})
    assert shape({"a": 1}) != shape({"a": 1, "b": 2})
    assert shape({"buckets": [{"name": "x", "after": "1"}]}) != shape({"buckets": []})
    assert shape({"buckets": [{"name": "x", "after": "1"}]}) == shape(
        {"buckets": [{"name": "y", "after": "22"}, {"name": "z", "after": "0"}]}
    )


def test_python_client_sends_the_node_sdks_sync_request(stack: Stack) -> None:
    if shutil.which("node") is None or not (NODE_SDK / "node_modules").is_dir():
        pytest.fail("needs node and the Node SDK: run `make setup` (npm ci in node-sdk/)")
    proxy = RecordingProxy(stack.sync_url)
    with LiveServer(proxy) as front:
        python = AuthProvider(
            stack.config("python", powersync_url=front.url), sync_options=STACK_SYNC
        )
        stack.providers.append(python)
        python.register("ada@example.com", PASSWORD, "Ada")
        python.library.add("Dune")  # so the user's bucket has an operation to resume after
        eventually(lambda: len(proxy.bodies) >= 2, timeout=30)
        python.close()  # its second stream stays open otherwise; no Python requests after this
        from_python = len(proxy.bodies)

        tokens = httpx.post(
            f"{stack.api_url}/v1/auth/login",
            json={"email": "ada@example.com", "password": PASSWORD, "client_type": "cli"},
        ).json()
        node = NodeClient(stack.tmp_path / "node.db", stack.api_url, front.url, tokens)
        try:
            node.call("connect")
            node.call("waitForFirstSync")
            eventually(lambda: len(proxy.bodies) >= from_python + 2, timeout=30)
        finally:
            node.close()

    python_first, python_again = proxy.bodies[:2]
    node_first, node_again = proxy.bodies[from_python : from_python + 2]
    assert python_first["client_id"] == python_again["client_id"] != node_first["client_id"]
    assert node_first["client_id"] == node_again["client_id"]
    # The core sends "parameters": {} (not null) because the client now passes an object.
    assert python_first["parameters"] == {} and node_first["parameters"] == {}
    assert python_again["buckets"] and node_again["buckets"], "second requests resume buckets"
    assert shape(python_first) == shape(node_first)
    assert shape(python_again) == shape(node_again)


def test_app_metadata_the_service_would_refuse_is_refused_here() -> None:
    with pytest.raises(ValueError, match="strings to strings"):
        SyncOptions(app_metadata={"build": 42})  # type: ignore[dict-item]
    assert SyncOptions(app_metadata={"build": "42"}).app_metadata == {"build": "42"}
