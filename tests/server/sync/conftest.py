"""Helpers for upload tests: users, CRUD entries shaped like the PowerSync SDKs' CrudEntry JSON."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer, register

UPLOAD = "/v1/sync/powersync-upload"


@dataclass
class Reader:
    token: str
    user_id: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@pytest.fixture
def alice(client: TestClient) -> Reader:
    tokens = register(client)
    return Reader(tokens["access_token"], tokens["user"]["id"])


@pytest.fixture
def bob(client: TestClient) -> Reader:
    tokens = register(client)
    return Reader(tokens["access_token"], tokens["user"]["id"])


def entry(op: str, row_id: Any, data: dict[str, Any] | None = None, **extra: Any) -> dict:
    item: dict[str, Any] = {"op": op, "type": "books", "id": str(row_id), "op_id": 1, "tx_id": 7}
    if data is not None:
        item["data"] = data
    item.update(extra)
    return item


def transaction(*entries: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Numbers op_ids consecutively from the first entry's, like a client's ps_crud ids."""
    first = entries[0]["op_id"] if entries else 1
    return {"batch": [{**e, "op_id": first + i} for i, e in enumerate(entries)]}


def upload(client: TestClient, reader: Reader, body: Any) -> Any:
    return client.post(UPLOAD, json=body, headers=reader.headers)


def upload_raw(client: TestClient, reader: Reader, raw: bytes, **headers: str) -> Any:
    all_headers = {"content-type": "application/json", **reader.headers, **headers}
    return client.post(UPLOAD, content=raw, headers=all_headers)


def new_id() -> str:
    return str(uuid.uuid4())


def book_row(sql: Any, row_id: str) -> dict[str, Any] | None:
    rows = sql("SELECT to_jsonb(b) FROM books b WHERE id = %s", (row_id,))
    return rows[0][0] if rows else None


def count_books(sql: Any) -> int:
    return sql("SELECT count(*) FROM books")[0][0]


def as_json_text(value: Any) -> str:
    return json.dumps(value)
