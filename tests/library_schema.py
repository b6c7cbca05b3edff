"""The declared tables, created in a test database straight from the declarations.

The development sync service never depends on the server's migrations, so its tests (and the
sync-config compile test, and the benchmark) lay out the synced tables from the declarations
instead: the types the declarations give PostgreSQL, every reference with its ON DELETE, the
server's stamps defaulting to now(), and every table in the `powersync` publication. On a
database that already has some of them (a migrated one), missing tables and columns are added.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from papyrus.contract import ID, OWNER, TABLES, Column, OnDelete, Table
from papyrus.contract.powersync import POSTGRES_TYPES, id_type

PUBLICATION = "powersync"


def _column_sql(column: Column) -> sql.Composable:
    parts: list[sql.Composable] = [
        sql.Identifier(column.name),
        sql.SQL(POSTGRES_TYPES[column.type]),
    ]
    if column.stamp is not None:
        parts.append(sql.SQL("NOT NULL DEFAULT now()"))
    else:
        if column.default is not None:
            parts.append(sql.SQL("DEFAULT {}").format(sql.Literal(column.default)))
        if column.required:
            parts.append(sql.SQL("NOT NULL"))
    if column.references is not None:
        action = "SET NULL" if column.on_delete is OnDelete.SET_NULL else "CASCADE"
        parts.append(
            sql.SQL("REFERENCES {} (id) ON DELETE {}").format(
                sql.Identifier(column.references), sql.SQL(action)
            )
        )
    return sql.SQL(" ").join(parts)


def create_table_sql(table: Table) -> sql.Composed:
    """CREATE TABLE IF NOT EXISTS for one declared table (id, owner, declared columns)."""
    columns = [
        sql.SQL("{} {} PRIMARY KEY").format(
            sql.Identifier(ID), sql.SQL(POSTGRES_TYPES[id_type(table)])
        ),
        sql.SQL("{} uuid NOT NULL").format(sql.Identifier(OWNER)),
        *(_column_sql(c) for c in table.columns),
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        sql.Identifier(table.name), sql.SQL(", ").join(columns)
    )


def apply_declared_tables(
    conn: psycopg.Connection[Any],
    tables: tuple[Table, ...] = TABLES,
    publication: str = PUBLICATION,
) -> None:
    """Create every declared table (or add its missing columns) and publish it."""
    for table in tables:
        conn.execute(create_table_sql(table))
        for column in table.columns:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}").format(
                    sql.Identifier(table.name), _column_sql(column)
                )
            )
    names = sql.SQL(", ").join(sql.Identifier(t.name) for t in tables)
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
    if exists.fetchone() is None:
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(publication), names)
        )
        return
    published = {
        row[0]
        for row in conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (publication,)
        )
    }
    for table in tables:
        if table.name not in published:
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(publication), sql.Identifier(table.name)
                )
            )


def source_tables(conn: psycopg.Connection[Any], schema: str = "public") -> list[dict[str, Any]]:
    """Every table of `schema` as the PowerSync service's Postgres module describes it to the
    sync-config compiler: columns with their type name (`pg_type`) and `format_type` text."""
    rows = conn.execute(
        """
        SELECT c.relname, a.attname, t.typname, format_type(a.atttypid, a.atttypmod)
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        JOIN pg_type t ON t.oid = a.atttypid
        WHERE c.relkind = 'r' AND n.nspname = %s
        ORDER BY c.relname, a.attnum
        """,
        (schema,),
    ).fetchall()
    tables: dict[str, list[dict[str, str]]] = {}
    for table, column, pg_type, internal_type in rows:
        if pg_type.startswith("_"):
            pg_type = f"{pg_type[1:]}[]"
        tables.setdefault(table, []).append(
            {"name": column, "pg_type": pg_type, "internal_type": internal_type}
        )
    return [{"name": name, "columns": columns} for name, columns in tables.items()]
