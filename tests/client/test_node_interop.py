"""A Python client and the official `@powersync/node` client converge on the same stack."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.client.conftest import eventually
from tests.client.stack import Stack
from tests.e2e.node_client import NODE_SDK, NodeClient

pytestmark = pytest.mark.node

PASSWORD = "correct horse battery"


@pytest.fixture
def node(stack: Stack) -> Iterator[NodeClient]:
    if shutil.which("node") is None or not (NODE_SDK / "node_modules").is_dir():
        pytest.fail("needs node and the Node SDK: run `make setup` (npm ci in node-sdk/)")
    tokens = httpx.post(
        f"{stack.api_url}/v1/auth/login",
        json={"email": "ada@example.com", "password": PASSWORD, "client_type": "cli"},
    ).json()
    client = NodeClient(stack.tmp_path / "node.db", stack.api_url, stack.sync_url, tokens)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def python_client(stack: Stack):  # type: ignore[no-untyped-def]
    device = stack.client("python")
    device.register("ada@example.com", PASSWORD, "Ada")
    return device


def node_titles(node: NodeClient) -> list[str]:
    return [r["title"] for r in node.rows("SELECT title FROM books ORDER BY title")]


def test_python_and_node_clients_converge(python_client, node: NodeClient) -> None:  # type: ignore[no-untyped-def]
    node.call("connect")
    node.call("waitForFirstSync")
    book = python_client.library.add("From Python", page_count=100, is_favorite=True)
    node.wait_until(lambda n: node_titles(n) == ["From Python"], what="python's insert")
    row = node.rows("SELECT page_count, is_favorite FROM books WHERE id = ?", book.id)[0]
    assert row == {"page_count": 100, "is_favorite": 1}

    node_id = str(uuid.uuid4())
    node.execute(
        "INSERT INTO books (id, owner_user_id, title, added_at, updated_at)"
        " VALUES (?, ?, 'From Node', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        node_id,
        python_client.user.id,
    )
    eventually(
        lambda: (
            sorted(b.title for b in python_client.library.list()) == ["From Node", "From Python"]
        )
    )
    python_client.library.update(node_id, title="From Node, edited in Python")
    node.wait_until(
        lambda n: "From Node, edited in Python" in node_titles(n), what="python's update"
    )
    node.execute("DELETE FROM books WHERE id = ?", book.id)
    eventually(
        lambda: [b.title for b in python_client.library.list()] == ["From Node, edited in Python"]
    )
