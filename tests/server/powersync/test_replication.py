"""`papyrus db setup-replication` against the embedded PostgreSQL: what PowerSync will need."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg2
import psycopg2.extras
import pytest
from typer.testing import CliRunner

from papyrus import contract
from papyrus.cli.main import app as cli
from papyrus.embedded_db import ServerInfo
from papyrus.server.powersync import replication


@pytest.fixture
def role(sql) -> Iterator[str]:
    """A cluster-wide role, unique per test and dropped afterwards."""
    name = f"ps_repl_{uuid.uuid4().hex[:8]}"
    yield name
    if sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)):
        sql(f'DROP OWNED BY "{name}"')
        sql(f'DROP ROLE "{name}"')


def _run_cli(tmp_path: Path, monkeypatch, database_url: str, role: str, password: str):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(os.environ):
        if name.startswith("POWERSYNC_"):
            monkeypatch.delenv(name)
    env = {
        "DATABASE_URL": database_url,
        "POWERSYNC_REPLICATION_ROLE": role,
        "POWERSYNC_REPLICATION_PASSWORD": password,
    }
    return CliRunner().invoke(
        cli, ["db", "setup-replication", "--data-dir", str(tmp_path)], env=env
    )


def test_the_replication_role_can_replicate_books_and_read_nothing_else(
    tmp_path: Path,
    monkeypatch,
    database_url: str,
    database_name: str,
    pg_server: ServerInfo,
    sql,
    role,
) -> None:
    password = "repl-" + uuid.uuid4().hex
    result = _run_cli(tmp_path, monkeypatch, database_url, role, password)
    assert result.exit_code == 0, result.output
    assert f"created replication role {role}" in result.output
    assert password not in result.output

    assert sql("SELECT rolreplication, rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)) == [
        (True, True)
    ]
    published = sql("SELECT tablename FROM pg_publication_tables WHERE pubname = 'powersync'")
    assert sorted(name for (name,) in published) == sorted(replication.SYNCED_TABLES)

    conninfo = (
        f"host=127.0.0.1 port={pg_server.port} dbname={database_name} "
        f"user={role} password={password}"
    )
    with psycopg.connect(conninfo) as conn:
        for table in replication.SYNCED_TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM users")

    # A logical replication session, as the PowerSync service opens one, sees a books insert.
    repl = psycopg2.connect(
        conninfo, connection_factory=psycopg2.extras.LogicalReplicationConnection
    )
    try:
        cur = repl.cursor()
        slot = f"test_{uuid.uuid4().hex[:8]}"
        cur.execute(f"CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL pgoutput")
        cur.start_replication(
            slot_name=slot,
            decode=False,
            options={"proto_version": "1", "publication_names": "powersync"},
        )
        user_id = uuid.uuid4()
        sql(
            "INSERT INTO users (id, email, email_verified, display_name) "
            "VALUES (%s, 'r@example.com', false, 'R')",
            (user_id,),
        )
        sql(
            "INSERT INTO books (id, owner_user_id, title) VALUES (%s, %s, 'Replicated')",
            (uuid.uuid4(), user_id),
        )
        payloads = _read_messages(cur, until=lambda p: p[:1] == b"I", timeout=20)
    finally:
        repl.close()
    relations = [p for p in payloads if p[:1] == b"R"]
    assert any(b"books" in p for p in relations)
    assert not any(b"users" in p for p in relations), "users is not published"
    assert any(b"Replicated" in p for p in payloads)


def test_setup_is_idempotent_and_updates_the_password(
    tmp_path: Path, monkeypatch, database_url: str, database_name: str, pg_server: ServerInfo, role
) -> None:
    assert _run_cli(tmp_path, monkeypatch, database_url, role, "first-password").exit_code == 0
    again = _run_cli(tmp_path, monkeypatch, database_url, role, "second-password")
    assert again.exit_code == 0, again.output
    assert f"updated replication role {role}" in again.output
    assert "publication powersync is in place" in again.output
    base = f"host=127.0.0.1 port={pg_server.port} dbname={database_name} user={role}"
    with psycopg.connect(base + " password=second-password") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(base + " password=first-password")


def test_a_missing_or_partial_publication_is_repaired(database_url: str, sql, role) -> None:
    sql("DROP PUBLICATION powersync")
    report = replication.setup_replication(database_url, role, "pw-123456")
    assert "created publication powersync" in report.actions
    sql("DROP PUBLICATION powersync")
    sql("CREATE PUBLICATION powersync FOR TABLE users")
    sql("ALTER PUBLICATION powersync DROP TABLE users")
    report = replication.setup_replication(database_url, role, "pw-123456")
    everything = ", ".join(replication.SYNCED_TABLES)
    assert f"added {everything} to publication powersync" in report.actions
    sql("ALTER PUBLICATION powersync DROP TABLE annotations, book_tags")
    report = replication.setup_replication(database_url, role, "pw-123456")
    assert "added book_tags, annotations to publication powersync" in report.actions
    bad = "CREATE PUBLICATION powersync FOR TABLE books WITH (publish = 'insert')"
    sql("DROP PUBLICATION powersync")
    sql(bad)
    with pytest.raises(replication.ReplicationSetupError, match="insert, update, delete"):
        replication.setup_replication(database_url, role, "pw-123456")


def test_the_migration_creates_the_publication(sql) -> None:
    assert sql("SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication") == [
        (True, True, True, True)
    ]
    published = sql("SELECT tablename FROM pg_publication_tables WHERE pubname = 'powersync'")
    assert sorted(name for (name,) in published) == sorted(t.name for t in contract.TABLES)


def test_wal_level_that_is_not_logical_is_explained(monkeypatch, database_url: str, role) -> None:
    real_execute = psycopg.Connection.execute

    def replica_wal(self, query, params=None, **kwargs):
        cursor = real_execute(self, query, params, **kwargs)
        if "FROM pg_settings" in str(query):
            rows = [(n, "replica" if n == "wal_level" else v) for n, v in cursor.fetchall()]
            return _Rows(rows)
        return cursor

    monkeypatch.setattr(psycopg.Connection, "execute", replica_wal)
    with pytest.raises(replication.ReplicationSetupError) as excinfo:
        replication.setup_replication(database_url, role, "pw-123456")
    message = str(excinfo.value)
    assert "wal_level is 'replica'" in message and "wal_level = logical" in message
    assert "restart PostgreSQL" in message


class _Rows:
    def __init__(self, rows: list[tuple]) -> None:
        self.rows = rows

    def fetchall(self) -> list[tuple]:
        return self.rows


def _read_messages(cur, until, timeout: float) -> list[bytes]:
    import select

    payloads: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = cur.read_message()
        if message is None:
            select.select([cur], [], [], 0.5)
            continue
        payloads.append(bytes(message.payload))
        message.cursor.send_feedback(flush_lsn=message.data_start)
        if until(payloads[-1]):
            return payloads
    raise AssertionError(f"no matching replication message within {timeout}s: {payloads!r}")
