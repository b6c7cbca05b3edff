"""`GET /v1/users/me/export`: everything held about the account, nothing about anyone else,
with the synced tables taken from the contract."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from papyrus.contract import TABLES
from papyrus.server.lifecycle import export
from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import ROOT, bearer, register
from tests.server.lifecycle.account_data import fill_account, footprint, rows_mentioning

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


# Where the export carries the account's rows of each table that is not a synced one (those
# go under "tables").
SECTIONS = {
    "users": "profile",
    "oauth_identities": "identities",
    "auth_sessions": "sessions",
    "login_known_sources": "sign_in_sources",
    "login_failures": "login_failures",
    "account_tokens": "pending_links",
    "mail_outbox": "unsent_mail",
    "sync_rejections": "sync_rejections",
    "sync_upload_parts": "staged_uploads",
    "sync_tombstones": "sync_tombstones",
}
# Tables that hold something of the account but are left out, each for the reason
# docs/account-lifecycle.md gives ("Not in the export").
NOT_EXPORTED = {"refresh_tokens", "oauth_states", "oauth_codes"}


def test_everything_deletion_removes_is_exported_or_left_out_for_a_documented_reason(
    client: TestClient, mailbox: MailCatcher, sql
) -> None:
    """The deletion test's scan (every table of every schema, for the user's id, address and
    the ids of everything that was theirs), over an account with a row in every synced table:
    each table it finds is an export section holding exactly those rows, or is on the
    documented list of what is left out. A table added later fails here until it is one or the
    other."""
    me = fill_account(client, mailbox, sql, "ada@example.com")
    register(client, email="bob@example.com")
    found = rows_mentioning(sql, footprint(sql, me["user"]["id"], "ada@example.com"))

    response = _export(client, me["access_token"])
    assert response.status_code == 200, response.text
    document = response.json()

    synced = {table.name for table in TABLES}
    unaccounted = []
    for qualified, rows in found.items():
        schema, table = qualified.split(".", 1)
        if schema == "public" and table in synced:
            assert len(document["tables"][table]) == len(rows), table
        elif schema == "public" and table in SECTIONS:
            section = document[SECTIONS[table]]
            count = 1 if isinstance(section, dict) else len(section)
            assert count == len(rows), (table, section, rows)
        elif schema != "public" or table not in NOT_EXPORTED:
            unaccounted.append(qualified)
    assert unaccounted == [], f"neither exported nor documented as left out: {unaccounted}"
    # The account really had a row in every synced table and every section.
    assert {t for t in synced if document["tables"][t]} == synced
    assert {f"public.{t}" for t in SECTIONS} <= set(found), sorted(found)
    assert document["sync_tombstones"][0]["table"] == "books"
    assert [f["source"] for f in document["login_failures"]] == ["testclient"]
    # Each table left out is named, with its reason, where the docs describe the export.
    docs = (ROOT / "docs" / "account-lifecycle.md").read_text()
    left_out = docs.split("### Not in the export", 1)[1].split("\n## ", 1)[0]
    for table in NOT_EXPORTED:
        assert f"`{table}`" in left_out, table
    assert "bob@example.com" not in response.text
