"""What PowerSync needs from the declarations: the sync config and the client schema.

Pure functions over `TABLES`, so the committed `sync-config.yaml` and `node-sdk/schema.json`
are renders that a test compares byte for byte, never hand copies:

    python -m papyrus.contract.powersync           # rewrite both files
    python -m papyrus.contract.powersync --check   # exit 1 if either differs from the render

Value conversions follow the real service (powersync-ja/powersync-service,
modules/module-postgres/src/types/registry.ts): uuid, text, jsonb, timestamptz and date arrive
on clients as text (timestamps as ISO 8601, edition 2 and later), booleans and integers as
INTEGER (booleans 1/0), double precision as REAL. uuid and jsonb are cast to text explicitly so
the synced value does not depend on the service's handling of custom types.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from papyrus.contract.declare import ID, OWNER, Column, Table, Type
from papyrus.contract.tables import TABLES

# The files the renders are committed to. One place to move them. (The sync config is package
# data of `papyrus.sync_config`, which the contract may not import, hence the sibling path.)
ROOT = Path(__file__).resolve().parents[3]
SYNC_CONFIG_PATH = Path(__file__).resolve().parents[1] / "sync_config" / "sync-config.yaml"
NODE_SCHEMA_PATH = ROOT / "node-sdk" / "schema.json"
REGENERATE = "python -m papyrus.contract.powersync"

EDITION = 3
"""Sync Streams compiled by the service (edition 3): the engine's compiler warns that edition 2
streams are an alpha version. Bucket ids are the same (`<version>#<stream>|0[<user id>]`)."""

# The column type of each logical type: in PostgreSQL, and on the client (SQLite).
POSTGRES_TYPES: dict[Type, str] = {
    Type.TEXT: "text",
    Type.INTEGER: "integer",
    Type.REAL: "double precision",
    Type.BOOLEAN: "boolean",
    Type.JSON: "jsonb",
    Type.TIMESTAMP: "timestamp with time zone",
    Type.DATE: "date",
    Type.ID: "uuid",
}
CLIENT_TYPES: dict[Type, str] = {
    Type.TEXT: "TEXT",
    Type.ID: "TEXT",
    Type.TIMESTAMP: "TEXT",
    Type.DATE: "TEXT",
    Type.JSON: "TEXT",
    Type.INTEGER: "INTEGER",
    Type.BOOLEAN: "INTEGER",
    Type.REAL: "REAL",
}
_CAST_TO_TEXT = frozenset({Type.ID, Type.JSON})


def id_type(table: Table) -> Type:
    """The row id's type: a UUID, or text `<a>:<b>` for tables whose ids come from a pair."""
    return Type.TEXT if table.id_from else Type.ID


def server_columns(table: Table) -> list[tuple[str, Type]]:
    """Every column of the server's table that syncs, in order: id, owner, then declared."""
    return [(ID, id_type(table)), (OWNER, Type.ID), *((c.name, c.type) for c in table.columns)]


def stream_query(table: Table) -> str:
    """The table's stream: every column, only the signed-in user's rows."""
    items = [_select_item(name, kind) for name, kind in server_columns(table)]
    lines = ",\n".join(f"  {item}" for item in items)
    return f"SELECT\n{lines}\nFROM {table.name}\nWHERE {OWNER} = auth.user_id()\n"


def _select_item(name: str, kind: Type) -> str:
    return f"{name}::text AS {name}" if kind in _CAST_TO_TEXT else name


def render_sync_config(tables: tuple[Table, ...] = TABLES) -> str:
    """The sync config: one auto-subscribed stream per table, named after it."""
    out = [
        "# Generated from src/papyrus/contract/tables.py; do not edit.",
        f"# Regenerate with: {REGENERATE}",
        "# Read by the PowerSync service and by the development sync service. Every stream",
        "# syncs one table's rows owned by the signed-in user (the token's subject).",
        "config:",
        f"  edition: {EDITION}",
        "",
        "streams:",
    ]
    for table in tables:
        out.append(f"  {table.name}:")
        out.append("    auto_subscribe: true")
        out.append("    query: |")
        out += [f"      {line}" for line in stream_query(table).splitlines()]
    return "\n".join(out) + "\n"


def client_column(column: Column) -> dict[str, str]:
    return {"name": column.name, "type": CLIENT_TYPES[column.type]}


def client_tables(tables: tuple[Table, ...] = TABLES) -> list[dict[str, Any]]:
    """Each table as the client schema declares it: `owner_user_id` and every declared column
    (the `id` column is implicit), with the declared local indexes."""
    return [
        {
            "name": table.name,
            "columns": [
                {"name": OWNER, "type": CLIENT_TYPES[Type.ID]},
                *(client_column(c) for c in table.columns),
            ],
            "indexes": [{"name": i.name, "columns": list(i.columns)} for i in table.indexes],
        }
        for table in tables
    ]


def render_node_schema(tables: tuple[Table, ...] = TABLES) -> str:
    """`node-sdk/schema.json`: the client tables, which the Node scripts turn into SDK tables."""
    return json.dumps({"tables": client_tables(tables)}, indent=2) + "\n"


def renders() -> dict[Path, str]:
    return {SYNC_CONFIG_PATH: render_sync_config(), NODE_SCHEMA_PATH: render_node_schema()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m papyrus.contract.powersync",
        description="Render sync-config.yaml and node-sdk/schema.json from the declarations.",
    )
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    stale = []
    for path, text in renders().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from the declarations; run: {REGENERATE}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
