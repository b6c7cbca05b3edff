"""Deleting an account: recent proof first, then nothing of the user remains in PostgreSQL,
and every signed-in device hears `account_deleted`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import bearer, register
from tests.mailbox import mail_to

PASSWORD = "correct horse battery"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

Sql = Callable[..., list[tuple[Any, ...]]]


def _delete(client: TestClient, access: str, password: str | None = PASSWORD) -> Any:
    body = {} if password is None else {"password": password}
    return client.request("DELETE", "/v1/users/me", json=body, headers=bearer(access))


def _tables(sql: Sql) -> list[str]:
    """Every table of the database, in every schema but PostgreSQL's own: a table added later
    (by any migration) is scanned without changing this test."""
    rows = sql(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    )
    return [name for (name,) in rows]


def rows_mentioning(sql: Sql, needles: set[str]) -> dict[str, list[str]]:
    """The rows (as text) of every table that contain any of `needles`, by table."""
    found: dict[str, list[str]] = {}
    patterns = [f"%{needle}%" for needle in needles]
    for table in _tables(sql):
        rows = sql(f"SELECT t::text FROM {table} t WHERE t::text ILIKE ANY(%s)", (patterns,))
        if rows:
            found[table] = [row for (row,) in rows]
    return found


def footprint(sql: Sql, user_id: str, email: str) -> set[str]:
    """The user's id and address, and every id in a row that mentions either (the user's
    sessions, tokens, rows, uploads...), so rows that point at those (a session's refresh
    tokens) are caught too."""
    needles = {user_id, email}
    for rows in rows_mentioning(sql, needles).values():
        for row in rows:
            needles.update(_UUID.findall(row))
    return needles


def _upload(client: TestClient, access: str, body: dict[str, Any], path: str = "") -> Any:
    return client.post(f"/v1/sync/powersync-upload{path}", json=body, headers=bearer(access))


def _book(book_id: str, title: str, op_id: int = 1) -> dict[str, Any]:
    return {
        "op": "PUT",
        "type": "books",
        "id": book_id,
        "op_id": op_id,
        "tx_id": 1,
        "data": {"title": title},
    }


def test_deleting_needs_recent_proof(client: TestClient, sql) -> None:
    me = register(client, email="ada@example.com", password=PASSWORD)
    bare = _delete(client, me["access_token"], None)
    assert bare.status_code == 403
    assert bare.json()["error"]["code"] == "reauthentication_required"
    no_body = client.delete("/v1/users/me", headers=bearer(me["access_token"]))
    assert no_body.status_code == 403
    wrong = _delete(client, me["access_token"], "not the password")
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "invalid_password"
    assert client.delete("/v1/users/me").status_code == 401
    typed = client.request(
        "DELETE", "/v1/users/me", json={"password": 123}, headers=bearer(me["access_token"])
    )
    assert typed.status_code == 422
    assert sql("SELECT email FROM users") == [("ada@example.com",)]
    # A Google sign-in long ago is no proof either (a stolen session could be that old).
    sql("UPDATE auth_sessions SET google_authenticated_at = now() - interval '1 hour'")
    assert _delete(client, me["access_token"], None).status_code == 403
    assert sql("SELECT count(*) FROM users") == [(1,)]


def test_other_devices_hear_account_deleted_and_the_address_is_free_again(
    client: TestClient, mailbox: MailCatcher
) -> None:
    here = register(client, email="ada@example.com", password=PASSWORD)
    phone = client.post(
        "/v1/auth/login",
        json={"email": "ada@example.com", "password": PASSWORD, "client_type": "mobile"},
    ).json()
    mail_to(mailbox, "ada@example.com", "verify")
    assert _delete(client, here["access_token"]).status_code == 204

    for device in (here, phone):
        me = client.get("/v1/users/me", headers=bearer(device["access_token"]))
        assert me.status_code == 401
        assert me.json()["error"]["code"] == "account_deleted"
        refresh = client.post("/v1/auth/refresh", json={"refresh_token": device["refresh_token"]})
        assert refresh.status_code == 401
        assert refresh.json()["error"]["code"] == "account_deleted"
    garbage = client.post("/v1/auth/refresh", json={"refresh_token": "x" * 43})
    assert garbage.json()["error"]["code"] == "invalid_refresh_token"
    login = client.post(
        "/v1/auth/login",
        json={"email": "ada@example.com", "password": PASSWORD, "client_type": "cli"},
    )
    assert login.json()["error"]["code"] == "invalid_credentials"
    again = register(client, email="ada@example.com", password=PASSWORD)
    assert again["user"]["id"] != here["user"]["id"]


def test_nothing_of_the_user_remains_in_any_table(
    client: TestClient, mailbox: MailCatcher, sql
) -> None:
    """Every table of the database is scanned for the user's id, address and the ids of
    everything that was theirs; tables added by later migrations are covered without a change
    here. Only the bare hashes of the refresh tokens that were live remain (no id, no address:
    they let devices hear `account_deleted`)."""
    me = register(client, email="ada@example.com", password=PASSWORD, device_label="Laptop")
    access, user_id = me["access_token"], me["user"]["id"]
    client.post(
        "/v1/auth/login",
        json={"email": "ada@example.com", "password": PASSWORD, "client_type": "mobile"},
    )
    client.post(
        "/v1/auth/login",
        json={"email": "ada@example.com", "password": "a wrong guess", "client_type": "cli"},
    )
    mail_to(mailbox, "ada@example.com", "verify")
    # Synced rows, a rejected upload and a staged part of a larger one.
    book = str(uuid.uuid4())
    assert _upload(client, access, {"batch": [_book(book, "Dune")]}).status_code == 200
    bad = {"batch": [{**_book(str(uuid.uuid4()), ""), "op_id": 2}]}
    assert _upload(client, access, bad).json()["status"] == "rejected"
    part = {
        "upload_id": str(uuid.uuid4()),
        "index": 0,
        "count": 2,
        "tx_id": 3,
        "batch": [_book(str(uuid.uuid4()), "Part one", 3)],
    }
    assert _upload(client, access, part, "/parts").status_code == 202
    # Pending links and mail: a reset, an address change, an undeliverable message.
    client.post("/v1/auth/password/forgot", json={"email": "ada@example.com"})
    client.post(
        "/v1/users/me/email",
        json={"new_email": "ada.new@example.com", "password": PASSWORD},
        headers=bearer(access),
    )
    sql(
        "INSERT INTO mail_outbox (user_id, kind, recipient, subject, status, failed_at)"
        " VALUES (%s, 'verify_email', 'ada@example.com', 'x', 'failed', now())",
        (user_id,),
    )
    # A linked Google identity and an unfinished Google flow.
    sql(
        "INSERT INTO oauth_identities (id, user_id, provider, subject, email)"
        " VALUES (gen_random_uuid(), %s, 'google', 'ada-sub', 'ada@example.com')",
        (user_id,),
    )
    sql(
        "INSERT INTO oauth_states (id, state_hash, provider, purpose, user_id, redirect_uri,"
        " code_verifier, nonce, expires_at) VALUES (gen_random_uuid(), %s, 'google', 'link',"
        " %s, 'http://127.0.0.1:43821/auth/callback', 'v', 'n', now() + interval '5 minutes')",
        (uuid.uuid4().bytes + uuid.uuid4().bytes, user_id),
    )
    # Someone else, who must keep everything.
    bob = register(client, email="bob@example.com", password=PASSWORD)
    bobs_book = str(uuid.uuid4())
    _upload(client, bob["access_token"], {"batch": [_book(bobs_book, "Bob's")]})

    needles = footprint(sql, user_id, "ada@example.com")
    before = rows_mentioning(sql, needles)
    expected = {
        "public.users",
        "public.auth_sessions",
        "public.refresh_tokens",
        "public.account_tokens",
        "public.mail_outbox",
        "public.login_failures",
        "public.login_known_sources",
        "public.oauth_identities",
        "public.oauth_states",
        "public.books",
        "public.sync_rejections",
        "public.sync_upload_parts",
    }
    assert expected <= set(before), sorted(set(before))

    assert _delete(client, access).status_code == 204

    assert rows_mentioning(sql, needles) == {}
    # What is kept: bare hashes of the refresh tokens live at deletion (two devices), nothing
    # that names the user. Justified in docs/account-lifecycle.md.
    assert sql("SELECT count(*) FROM deleted_account_tokens") == [(2,)]
    assert sql("SELECT email FROM users") == [("bob@example.com",)]
    assert sql("SELECT id::text FROM books") == [(bobs_book,)]
    assert client.get("/v1/users/me", headers=bearer(bob["access_token"])).status_code == 200
