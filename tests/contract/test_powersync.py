"""The sync config and the client schema are renders of the declarations, and the real
PowerSync service's compiler accepts the sync config without an error or a warning."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from papyrus.contract import TABLES, Type, table
from papyrus.contract import powersync as render
from papyrus.embedded_db import ServerInfo
from tests.e2e.node_client import NODE_SDK
from tests.library_schema import source_tables


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (render.SYNC_CONFIG_PATH, render.render_sync_config()),
        (render.NODE_SCHEMA_PATH, render.render_node_schema()),
    ],
    ids=["sync-config", "node-schema"],
)
def test_committed_files_are_the_renders(path: Path, text: str) -> None:
    assert path.read_text() == text, (
        f"{path.relative_to(render.ROOT)} differs from the declarations; "
        f"regenerate it with: {render.REGENERATE}"
    )


def test_check_mode_names_the_stale_file_and_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config, schema = tmp_path / "sync-config.yaml", tmp_path / "schema.json"
    monkeypatch.setattr(render, "ROOT", tmp_path)
    monkeypatch.setattr(render, "SYNC_CONFIG_PATH", config)
    monkeypatch.setattr(render, "NODE_SCHEMA_PATH", schema)
    assert render.main([]) == 0
    assert render.main(["--check"]) == 0
    config.write_text(config.read_text().replace("title,\n", ""))
    capsys.readouterr()
    assert render.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "sync-config.yaml differs" in out and render.REGENERATE in out
    assert "schema.json" not in out


def test_every_table_streams_every_column_to_its_owner_only() -> None:
    text = render.render_sync_config()
    for declared in TABLES:
        query = render.stream_query(declared)
        assert f"  {declared.name}:\n    auto_subscribe: true\n" in text
        assert query.endswith(f"FROM {declared.name}\nWHERE owner_user_id = auth.user_id()\n")
        for column in declared.columns:
            item = (
                f"{column.name}::text AS {column.name}"
                if column.type in (Type.ID, Type.JSON)
                else column.name
            )
            assert f"  {item},\n" in query or f"  {item}\nFROM" in query, (declared.name, item)


def test_client_tables_follow_the_declared_types() -> None:
    (books,) = [t for t in render.client_tables() if t["name"] == "books"]
    types = {c["name"]: c["type"] for c in books["columns"]}
    assert next(iter(types)) == "owner_user_id"
    assert len(types) == 1 + len(table("books").columns)
    assert types["is_favorite"] == "INTEGER"  # booleans sync as 1/0
    assert types["current_position"] == "REAL"
    assert types["series_id"] == types["co_authors"] == types["started_at"] == "TEXT"
    assert {"name": "by_series", "columns": ["series_id"]} in books["indexes"]
    (goals,) = [t for t in render.client_tables() if t["name"] == "reading_goals"]
    assert {c["name"]: c["type"] for c in goals["columns"]}["period_start"] == "TEXT"


# -- the real service's compiler ------------------------------------------------------------


@pytest.fixture
def declared_database(pg_server: ServerInfo, database_name: str) -> str:
    """The migrated test database: the compiler sees the tables as the migrations made them."""
    return pg_server.conninfo(database_name)


def compile_with_service_compiler(yaml: str, tables: list[dict[str, Any]]) -> dict[str, Any]:
    if shutil.which("node") is None or not (NODE_SDK / "node_modules").is_dir():
        pytest.fail("needs node and node-sdk/node_modules: run `make setup`")
    done = subprocess.run(
        ["node", str(NODE_SDK / "compile-sync-config.mjs")],
        input=json.dumps({"yaml": yaml, "tables": tables}),
        capture_output=True,
        text=True,
        cwd=NODE_SDK,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.node
def test_the_service_compiler_accepts_the_sync_config(declared_database: str) -> None:
    with psycopg.connect(declared_database) as conn:
        tables = source_tables(conn)
    assert {t["name"] for t in tables} >= {t.name for t in TABLES}
    result = compile_with_service_compiler(render.SYNC_CONFIG_PATH.read_text(), tables)
    assert result["errors"] == []
    # The client schema the engine derives from the config is the one we render.
    expected = [
        {"name": t["name"], "columns": [{**c, "type": c["type"].lower()} for c in t["columns"]]}
        for t in render.client_tables()
    ]
    assert sorted(result["tables"], key=lambda t: t["name"]) == sorted(
        expected, key=lambda t: t["name"]
    )


@pytest.mark.node
def test_the_service_compiler_reports_what_breaks_a_config(declared_database: str) -> None:
    """The harness surfaces the compiler's warnings and errors (so the test above can fail)."""
    with psycopg.connect(declared_database) as conn:
        tables = source_tables(conn)
    yaml = render.render_sync_config()
    missing_column = yaml.replace("  title,\n", "  title,\n        shelf_label,\n", 1)
    result = compile_with_service_compiler(missing_column, tables)
    assert [(e["type"], e["message"]) for e in result["errors"]] == [
        ("warning", "Column not found.")
    ]
    edition_2 = yaml.replace("edition: 3", "edition: 2")
    result = compile_with_service_compiler(edition_2, tables)
    assert [e["type"] for e in result["errors"]] == ["warning"]
    assert "alpha version of Sync Streams" in result["errors"][0]["message"]
    broken = yaml.replace("WHERE owner_user_id = auth.user_id()", "WHERE owner_user_id = ", 1)
    result = compile_with_service_compiler(broken, tables)
    assert "fatal" in [e["type"] for e in result["errors"]]


def test_the_data_model_doc_shows_every_declared_reference_and_table() -> None:
    text = (render.ROOT / "docs" / "data-model.md").read_text()
    diagram = text.split("```mermaid", 1)[1].split("```", 1)[0]
    edges = set(
        re.findall(r"^\s*(\w+) \S+ (\w+) : \"(\w+) \((cascade|set null)\)\"$", diagram, re.M)
    )
    declared = {
        (c.references, t.name, c.name, c.on_delete.value.replace("_", " "))
        for t in TABLES
        for c in t.references
    }
    assert edges == declared
    for declared_table in TABLES:
        assert f"\n| `{declared_table.name}` | " in text, declared_table.name
