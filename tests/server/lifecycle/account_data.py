"""An account with something in every place the server keeps data about one, and the scan that
finds all of it in the database. Shared by the deletion test (nothing of it remains) and the
export test (all of it is exported, or left out for a documented reason), so the two cannot
drift apart.

The scan reads every table of every schema, and the synced rows are made from the contract's
declarations (`tests/server/sync/rows.py`): a table added later is covered by both tests
without changing them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import bearer, register, wait_for
from tests.mailbox import mail_to
from tests.server.sync.conftest import transaction
from tests.server.sync.rows import one_of_each

PASSWORD = "correct horse battery"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

Sql = Callable[..., list[tuple[Any, ...]]]


def tables(sql: Sql) -> list[str]:
    """Every table of the database, in every schema but PostgreSQL's own, as `schema.table`."""
    rows = sql(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    )
    return [name for (name,) in rows]


def rows_mentioning(sql: Sql, needles: set[str]) -> dict[str, list[str]]:
    """The rows (as text) of every table that contain any of `needles`, by table."""
    found: dict[str, list[str]] = {}
    patterns = [f"%{needle}%" for needle in needles]
    for table in tables(sql):
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


def upload(client: TestClient, access: str, body: dict[str, Any], path: str = "") -> Any:
    return client.post(f"/v1/sync/powersync-upload{path}", json=body, headers=bearer(access))


def book(book_id: str, title: str, op_id: int = 1) -> dict[str, Any]:
    data = {"title": title}
    return {"op": "PUT", "type": "books", "id": book_id, "op_id": op_id, "tx_id": 1, "data": data}


def fill_account(client: TestClient, mailbox: MailCatcher, sql: Sql, email: str) -> dict[str, Any]:
    """Registers `email` and gives the account something in every place the server keeps data
    about one; returns the registration's token response. Pending mail is delivered first."""
    me = register(client, email=email, password=PASSWORD, device_label="Laptop")
    access, user_id = me["access_token"], me["user"]["id"]
    client.post(
        "/v1/auth/login",
        json={"email": email, "password": PASSWORD, "client_type": "mobile"},
    )
    client.post(
        "/v1/auth/login",
        json={"email": email, "password": "a wrong guess", "client_type": "cli"},
    )
    mail_to(mailbox, email, "verify")
    # A row in every synced table, a deleted one (a tombstone), a rejected upload and a staged
    # part of a larger one.
    written = upload(client, access, transaction(*(row.entry() for row in one_of_each())))
    assert written.json()["status"] == "applied", written.text
    gone = str(uuid.uuid4())
    assert upload(client, access, {"batch": [book(gone, "Soon gone")]}).status_code == 200
    removal = {"op": "DELETE", "type": "books", "id": gone, "op_id": 1, "tx_id": 2}
    assert upload(client, access, {"batch": [removal]}).json()["status"] == "applied"
    bad = {"batch": [{**book(str(uuid.uuid4()), ""), "op_id": 2}]}
    assert upload(client, access, bad).json()["status"] == "rejected"
    part = {
        "upload_id": str(uuid.uuid4()),
        "index": 0,
        "count": 2,
        "tx_id": 3,
        "batch": [book(str(uuid.uuid4()), "Part one", 3)],
    }
    assert upload(client, access, part, "/parts").status_code == 202
    # Pending links and mail: a reset, an address change, an undeliverable message.
    client.post("/v1/auth/password/forgot", json={"email": email})
    local, _, domain = email.partition("@")
    changed = client.post(
        "/v1/users/me/email",
        json={"new_email": f"{local}.new@{domain}", "password": PASSWORD},
        headers=bearer(access),
    )
    assert changed.status_code == 202, changed.text
    sql(
        "INSERT INTO mail_outbox (user_id, kind, recipient, subject, status, failed_at)"
        " VALUES (%s, 'verify_email', %s, 'x', 'failed', now())",
        (user_id, email),
    )
    # A linked Google identity, an unfinished Google flow and a one-time code not yet spent.
    sql(
        "INSERT INTO oauth_identities (id, user_id, provider, subject, email)"
        " VALUES (gen_random_uuid(), %s, 'google', %s, %s)",
        (user_id, f"{local}-sub", email),
    )
    sql(
        "INSERT INTO oauth_states (id, state_hash, provider, purpose, user_id, redirect_uri,"
        " code_verifier, nonce, expires_at) VALUES (gen_random_uuid(), %s, 'google', 'link',"
        " %s, 'http://127.0.0.1:43821/auth/callback', 'v', 'n', now() + interval '5 minutes')",
        (uuid.uuid4().bytes + uuid.uuid4().bytes, user_id),
    )
    sql(
        "INSERT INTO oauth_codes (id, code_hash, purpose, user_id, provider, subject, email,"
        " expires_at) VALUES (gen_random_uuid(), %s, 'sign_in', %s, 'google', %s, %s,"
        " now() + interval '5 minutes')",
        (uuid.uuid4().bytes + uuid.uuid4().bytes, user_id, f"{local}-sub", email),
    )
    wait_for(
        lambda: sql("SELECT count(*) FROM mail_outbox WHERE status = 'pending'") == [(0,)],
        what="pending mail delivered",
    )
    return me
