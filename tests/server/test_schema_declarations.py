"""The migrated database equals the sync contract's declarations.

Two ways, so a declaration changed without a migration (or a migration that drifts from the
declarations) fails here:

* read straight from the declarations: each synced table's columns, storage types, nullability,
  defaults, same-owner foreign keys and their on-delete action, unique keys, checks, the
  tombstone trigger and the publication;
* everything else exactly: PostgreSQL's own rendering of every column, constraint, index,
  trigger and function of the migrated database equals that of a scratch database created from
  the generated models (Alembic's comparison skips checks, defaults and triggers).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, pool

from papyrus import contract
from papyrus.contract import OnDelete, Type
from papyrus.embedded_db import ServerInfo
from papyrus.server.db import Base
from papyrus.server.models import import_all_models
from papyrus.server.sync.models import checks

SERVER_TABLES = ("sync_tombstones", "sync_rejections")
STORAGE = {
    Type.INTEGER: "integer",
    Type.REAL: "double precision",
    Type.BOOLEAN: "boolean",
    Type.JSON: "jsonb",
    Type.TIMESTAMP: "timestamp with time zone",
    Type.DATE: "date",
    Type.ID: "uuid",
}


def catalog(conninfo: str, tables: list[str]) -> dict[str, Any]:
    """How PostgreSQL itself renders these tables: columns, constraints, indexes, triggers."""
    with psycopg.connect(conninfo) as conn:

        def rows(query: str, *params: Any) -> list[tuple]:
            return sorted(conn.execute(query, params).fetchall())

        found: dict[str, Any] = {}
        for table in tables:
            found[table] = {
                "columns": rows(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                    "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                    "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                    "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                    table,
                ),
                "constraints": rows(
                    "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = %s::regclass",
                    table,
                ),
                "indexes": rows(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", table
                ),
                "triggers": rows(
                    "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                    "WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                    table,
                ),
            }
        found["functions"] = rows(
            "SELECT proname, pg_get_functiondef(oid) FROM pg_proc "
            "WHERE proname = 'sync_record_tombstones'"
        )
        return found


@pytest.fixture
def from_models(pg_server: ServerInfo) -> Iterator[str]:
    """A scratch database created from the generated models, not from the migrations."""
    name = f"m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    import_all_models()
    engine = create_engine(pg_server.url(name), poolclass=pool.NullPool)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()
    yield name
    with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_the_migrated_database_renders_exactly_as_the_models(
    pg_server: ServerInfo, database_name: str, from_models: str
) -> None:
    tables = [t.name for t in contract.TABLES] + list(SERVER_TABLES)
    migrated = catalog(pg_server.conninfo(database_name), tables)
    expected = catalog(pg_server.conninfo(from_models), tables)
    for table in [*tables, "functions"]:
        assert migrated[table] == expected[table], table


def test_the_migrated_database_holds_what_the_declarations_say(sql) -> None:
    published = {
        name
        for (name,) in sql(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s", ("powersync",)
        )
    }
    for table in contract.TABLES:
        columns = {
            name: (data_type, not_null, default)
            for name, data_type, not_null, default in sql(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                (table.name,),
            )
        }
        expected = {
            "id": ("text" if table.id_from else "uuid", True, None),
            "owner_user_id": ("uuid", True, None),
        }
        for column in table.columns:
            if column.type is Type.TEXT:
                storage = f"character varying({column.max_length})"
            else:
                storage = STORAGE[column.type]
            expected[column.name] = (
                storage,
                column.required or column.stamp is not None,
                _default(column),
            )
        assert columns == expected, table.name

        constraints = {
            name: definition
            for name, definition in sql(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass",
                (table.name,),
            )
        }
        for column in table.references:
            action = (
                "CASCADE" if column.on_delete is OnDelete.CASCADE else f"SET NULL ({column.name})"
            )
            assert constraints[f"fk_{table.name}_{column.name}_{column.references}"] == (
                f"FOREIGN KEY ({column.name}, owner_user_id) REFERENCES "
                f"{column.references}(id, owner_user_id) ON DELETE {action}"
            )
            parent = f"uq_{column.references}_id_owner"
            assert sql("SELECT 1 FROM pg_constraint WHERE conname = %s", (parent,)), parent
        derived = {f"ck_{table.name}_{name}" for name in checks(table)}
        present = {name for name in constraints if name.startswith("ck_")}
        assert present == derived, table.name

        indexes = {
            definition.split(" USING ")[1]
            for (definition,) in sql(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table.name,)
            )
        }
        assert "btree (owner_user_id)" in indexes, table.name
        for column in table.references:
            assert f"btree ({column.name})" in indexes, (table.name, column.name)
        for unique in table.unique:
            parts = [
                f"lower(({c})::text) WITH =" if unique.case_insensitive else f"{c} WITH ="
                for c in unique.columns
            ]
            assert constraints[f"uq_{table.name}_{'_'.join(unique.columns)}"] == (
                f"EXCLUDE USING btree (owner_user_id WITH =, {', '.join(parts)}) "
                "DEFERRABLE INITIALLY DEFERRED"
            )

        triggers = sql(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            (table.name,),
        )
        assert triggers == [("record_tombstones",)], table.name
        assert table.name in published


def _default(column: contract.Column) -> str | None:
    if column.stamp is not None:
        return "now()"
    if column.default is None:
        return None
    if isinstance(column.default, bool):
        return "true" if column.default else "false"
    if isinstance(column.default, str):
        return f"'{column.default}'::character varying"
    return str(column.default)
