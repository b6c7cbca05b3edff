"""Preparing PostgreSQL for PowerSync logical replication (`papyrus db setup-replication`).

What the service needs, and what this checks or creates (idempotently):

* `wal_level = logical` and replication slots / WAL senders: server settings that need a restart,
  so they are only checked, with a message saying what to change;
* the `powersync` publication (the name is fixed by the service) covering exactly the synced
  tables, publishing inserts, updates, deletes and truncates (migrations create it; this repairs);
* a login role with REPLICATION and SELECT on the synced tables only. Its password is sent as a
  SCRAM verifier computed here, so the plaintext never reaches the server or its statement log.

Replica identity stays the default (the primary key): the service merges unchanged TOAST values
from its own storage, so REPLICA IDENTITY FULL would only add WAL volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from papyrus.contract import TABLES

PUBLICATION = "powersync"
SYNCED_TABLES = tuple(table.name for table in TABLES)


class ReplicationSetupError(Exception):
    """The database cannot serve PowerSync yet; the message says what to change."""


@dataclass
class SetupReport:
    actions: list[str] = field(default_factory=list)


def libpq_url(database_url: str) -> str:
    """SQLAlchemy's `postgresql+psycopg://` URL as libpq wants it."""
    scheme, sep, rest = database_url.partition("://")
    return ("postgresql" if scheme.startswith("postgresql") else scheme) + sep + rest


def setup_replication(database_url: str, role: str, password: str) -> SetupReport:
    report = SetupReport()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        check_server_settings(conn)
        row = conn.execute("SELECT current_schema()").fetchone()
        assert row is not None  # a SELECT without FROM returns one row
        schema: str = row[0]
        _check_tables(conn, schema)
        _ensure_publication(conn, schema, report)
        try:
            _ensure_role(conn, schema, role, password, report)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ReplicationSetupError(
                f"not allowed to create or change role {role!r} ({exc.diag.message_primary}). "
                "Run this as a superuser, or create the role yourself: LOGIN REPLICATION, and "
                f"SELECT on {', '.join(SYNCED_TABLES)} (on managed services, grant their "
                "replication role, e.g. rds_replication)."
            ) from None
    return report


def check_server_settings(conn: psycopg.Connection) -> None:
    settings: dict[str, str] = dict(
        conn.execute(
            "SELECT name, setting FROM pg_settings "
            "WHERE name IN ('wal_level', 'max_replication_slots', 'max_wal_senders')"
        ).fetchall()
    )
    if settings.get("wal_level") != "logical":
        raise ReplicationSetupError(
            f"wal_level is {settings.get('wal_level')!r}, PowerSync needs 'logical'. Set "
            "`wal_level = logical` in postgresql.conf (or start postgres with "
            "`-c wal_level=logical`; on a managed service, enable logical replication), "
            "restart PostgreSQL, and run this again."
        )
    for name in ("max_replication_slots", "max_wal_senders"):
        if int(settings.get(name, 0)) < 1:
            raise ReplicationSetupError(
                f"{name} is {settings.get(name)}; set it to at least 1 (10 is typical) in "
                "postgresql.conf and restart PostgreSQL."
            )


def _check_tables(conn: psycopg.Connection, schema: str) -> None:
    for table in SYNCED_TABLES:
        found = conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (schema, table)
        ).fetchone()
        if not found:
            raise ReplicationSetupError(
                f"table {schema}.{table} does not exist; run `papyrus db upgrade` first."
            )


def _ensure_publication(conn: psycopg.Connection, schema: str, report: SetupReport) -> None:
    row = conn.execute(
        "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot "
        "FROM pg_publication WHERE pubname = %s",
        (PUBLICATION,),
    ).fetchone()
    if row is None:
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(PUBLICATION), _table_list(schema, SYNCED_TABLES)
            )
        )
        report.actions.append(f"created publication {PUBLICATION}")
        return
    all_tables, *publishes, via_root = row
    if not all(publishes) or via_root:
        raise ReplicationSetupError(
            f"publication {PUBLICATION!r} must publish insert, update, delete and truncate "
            "without publish_via_partition_root; drop it and run this again."
        )
    if all_tables:
        report.actions.append(f"publication {PUBLICATION} covers all tables")
        return
    present = {
        name
        for (name,) in conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s",
            (PUBLICATION, schema),
        )
    }
    missing = [t for t in SYNCED_TABLES if t not in present]
    if missing:
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                sql.Identifier(PUBLICATION), _table_list(schema, missing)
            )
        )
        report.actions.append(f"added {', '.join(missing)} to publication {PUBLICATION}")
    else:
        report.actions.append(f"publication {PUBLICATION} is in place")


def _ensure_role(
    conn: psycopg.Connection, schema: str, role: str, password: str, report: SetupReport
) -> None:
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    conn.execute(
        sql.SQL(verb + " ROLE {} WITH LOGIN REPLICATION PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(verifier.decode())
        )
    )
    report.actions.append(f"{'updated' if exists else 'created'} replication role {role}")
    can_use = conn.execute(
        "SELECT has_schema_privilege(%s, %s, 'USAGE')", (role, schema)
    ).fetchone()
    assert can_use is not None  # a SELECT without FROM returns one row
    if not can_use[0]:
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
    conn.execute(
        sql.SQL("GRANT SELECT ON {} TO {}").format(
            _table_list(schema, SYNCED_TABLES), sql.Identifier(role)
        )
    )
    report.actions.append(f"granted SELECT on {', '.join(SYNCED_TABLES)} to {role}")


def _table_list(schema: str, tables: tuple[str, ...] | list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(schema, t) for t in tables)
