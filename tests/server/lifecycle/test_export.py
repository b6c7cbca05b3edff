"""`GET /v1/users/me/export`: everything held about the account, nothing about anyone else,
with the synced tables taken from the contract."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from papyrus.contract import TABLES
from papyrus.server.lifecycle import export
from tests.conftest import bearer, register

PASSWORD = "correct horse battery"


def _export(client: TestClient, access: str) -> Any:
    return client.get("/v1/users/me/export", headers=bearer(access))


def _put(book_id: str, title: str, op_id: int = 1, **data: Any) -> dict[str, Any]:
    return {
        "op": "PUT",
        "type": "books",
        "id": book_id,
        "op_id": op_id,
        "tx_id": 1,
        "data": {"title": title, **data},
    }


def _synced_tables_in_database(sql) -> set[str]:
    present = {name for (name,) in sql("SELECT tablename FROM pg_tables")}
    return {table.name for table in TABLES} & present


def test_the_export_holds_the_profile_sessions_and_every_synced_row(
    client: TestClient, sql
) -> None:
    me = register(client, email="ada@example.com", password=PASSWORD, device_label="Laptop")
    client.post(
        "/v1/auth/login",
        json={
            "email": "ada@example.com",
            "password": PASSWORD,
            "client_type": "mobile",
            "device_label": "Phone",
        },
    )
    access = me["access_token"]
    dune = str(uuid.uuid4())
    batch = [_put(dune, "Dune", custom_metadata='{"shelf": "sf"}'), _put(str(uuid.uuid4()), "", 2)]
    client.post("/v1/sync/powersync-upload", json={"batch": batch[:1]}, headers=bearer(access))
    client.post(
        "/v1/sync/powersync-upload", json={"batch": [batch[1]]}, headers=bearer(access)
    )  # rejected: empty title
    other = register(client, email="bob@example.com")
    client.post(
        "/v1/sync/powersync-upload",
        json={"batch": [_put(str(uuid.uuid4()), "Bob's secret diary")]},
        headers=bearer(other["access_token"]),
    )

    response = _export(client, access)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    assert int(response.headers["content-length"]) == len(response.content)
    document = response.json()
    assert document["format"] == "papyrus-account-export" and document["version"] == 1
    profile = document["profile"]
    assert profile["id"] == me["user"]["id"] and profile["email"] == "ada@example.com"
    assert profile["has_password"] is True and "password_hash" not in profile
    assert sorted(s["device_label"] for s in document["sessions"]) == ["Laptop", "Phone"]
    assert all(s["created_at"] and s["last_seen_at"] for s in document["sessions"])
    assert [s["source"] for s in document["sign_in_sources"]] == ["testclient"]
    assert [link["purpose"] for link in document["pending_links"]] == ["verify_email"]
    assert [r["code"] for r in document["sync_rejections"]] != []
    # The synced tables are the contract's (those the database has), not a list kept here.
    assert set(document["tables"]) == _synced_tables_in_database(sql)
    [book] = document["tables"]["books"]
    assert book["id"] == dune and book["title"] == "Dune"
    assert book["owner_user_id"] == me["user"]["id"]
    assert book["custom_metadata"] == {"shelf": "sf"}  # JSON columns stay JSON
    assert "Bob's secret diary" not in response.text
    assert "bob@example.com" not in response.text
    # Nothing secret: no password hash, no token or its hash.
    assert me["refresh_token"] not in response.text and "argon2" not in response.text


def test_a_large_library_is_exported_whole_through_a_file(
    client: TestClient, sql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More rows than one fetch batch, and more bytes than the in-memory spool."""
    monkeypatch.setattr(export, "SPOOL_IN_MEMORY", 64 * 1024)
    me = register(client, email="ada@example.com")
    sql(
        "INSERT INTO books (id, owner_user_id, title) SELECT gen_random_uuid(), %s,"
        " 'Book ' || n FROM generate_series(1, 2500) n",
        (me["user"]["id"],),
    )
    response = _export(client, me["access_token"])
    assert response.status_code == 200
    assert len(response.content) > 64 * 1024
    titles = {b["title"] for b in response.json()["tables"]["books"]}
    assert titles == {f"Book {n}" for n in range(1, 2501)}


def test_export_needs_a_session(client: TestClient) -> None:
    response = client.get("/v1/users/me/export")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
