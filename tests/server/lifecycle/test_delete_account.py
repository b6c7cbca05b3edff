"""Deleting an account: recent proof first, then nothing of the user remains in PostgreSQL,
and every signed-in device hears `account_deleted`."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from papyrus import contract
from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import bearer, register
from tests.mailbox import mail_to
from tests.server.lifecycle.account_data import (
    PASSWORD,
    book,
    fill_account,
    footprint,
    rows_mentioning,
    upload,
)


def _delete(client: TestClient, access: str, password: str | None = PASSWORD) -> Any:
    body = {} if password is None else {"password": password}
    return client.request("DELETE", "/v1/users/me", json=body, headers=bearer(access))


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
    everything that was theirs; tables added by later migrations, and synced tables added to
    the contract, are covered without a change here. Only the bare hashes of the refresh tokens
    that were live remain (no id, no address: they let devices hear `account_deleted`)."""
    me = fill_account(client, mailbox, sql, "ada@example.com")
    access, user_id = me["access_token"], me["user"]["id"]
    # Someone else, who must keep everything.
    bob = register(client, email="bob@example.com", password=PASSWORD)
    bobs_book = str(uuid.uuid4())
    upload(client, bob["access_token"], {"batch": [book(bobs_book, "Bob's")]})

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
        "public.oauth_codes",
        "public.sync_rejections",
        "public.sync_upload_parts",
        "public.sync_tombstones",
        *(f"public.{table.name}" for table in contract.TABLES),
    }
    assert expected <= set(before), sorted(expected - set(before))

    assert _delete(client, access).status_code == 204

    assert rows_mentioning(sql, needles) == {}
    # What is kept: bare hashes of the refresh tokens live at deletion (two devices), nothing
    # that names the user. Justified in docs/account-lifecycle.md.
    assert sql("SELECT count(*) FROM deleted_account_tokens") == [(2,)]
    assert sql("SELECT email FROM users") == [("bob@example.com",)]
    assert sql("SELECT id::text FROM books") == [(bobs_book,)]
    assert client.get("/v1/users/me", headers=bearer(bob["access_token"])).status_code == 200
