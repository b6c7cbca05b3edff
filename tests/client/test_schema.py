"""Schema JSON: what the core extension receives must match the Node SDK's."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from papyrus.client import ACCOUNT_SCHEMA, GUEST_SCHEMA, Column, Index, Schema, Table
from papyrus.client.schema import GUEST_TABLES, SYNCED_TABLES
from papyrus.contract import TABLES, table
from tests.e2e.node_client import NODE_SDK


def test_table_json_matches_node_sdk_shape() -> None:
    table = Table(
        "books",
        [Column.text("title"), Column.integer("page_count"), Column.real("current_position")],
    )
    assert Schema([table]).to_json() == {
        "tables": [
            {
                "name": "books",
                "view_name": "books",
                "columns": [
                    {"name": "title", "type": "TEXT"},
                    {"name": "page_count", "type": "INTEGER"},
                    {"name": "current_position", "type": "REAL"},
                ],
                "indexes": [],
                "local_only": False,
                "insert_only": False,
                "include_old": False,
                "include_old_only_when_changed": False,
                "include_metadata": False,
                "ignore_empty_update": False,
            }
        ],
        "raw_tables": [],
    }


def test_index_json_carries_column_types() -> None:
    table = Table("t", [Column.integer("n")], indexes=[Index("by_n", [("n", False)])])
    assert table.to_json()["indexes"] == [
        {"name": "by_n", "columns": [{"name": "n", "ascending": False, "type": "INTEGER"}]}
    ]


@pytest.mark.parametrize("bad", ["id", "1x", "a b"])
def test_bad_column_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        Column.text(bad)


def test_index_on_unknown_column_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown column"):
        Table("t", [Column.text("a")], indexes=[Index("i", ["b"])]).to_json()


def test_books_schema_mirrors_the_server_table() -> None:
    books = ACCOUNT_SCHEMA.table("books").to_json()
    types = {c["name"]: c["type"] for c in books["columns"]}
    assert types["page_count"] == "INTEGER" and types["current_position"] == "REAL"
    assert types["is_favorite"] == "INTEGER" and types["co_authors"] == "TEXT"
    assert set(types) == {"owner_user_id", *table("books").column_names}  # all but the id
    assert books["local_only"] is False
    assert GUEST_SCHEMA.table("books").to_json()["local_only"] is True
    assert ACCOUNT_SCHEMA.table("upload_rejections").local_only


def test_every_declared_table_is_in_both_schemas() -> None:
    declared = [t.name for t in TABLES]
    local = ["upload_rejections", "reading_activity"]  # this device's own, never synced
    assert [t.name for t in ACCOUNT_SCHEMA.tables] == [*declared, *local]
    assert [t.name for t in GUEST_SCHEMA.tables] == [*declared, "reading_activity"]
    assert all(t.local_only for t in GUEST_SCHEMA.tables)
    assert all(ACCOUNT_SCHEMA.table(name).local_only for name in local)
    assert not any(t.local_only for t in SYNCED_TABLES)
    shelves = ACCOUNT_SCHEMA.table("book_shelves").to_json()
    assert [i["name"] for i in shelves["indexes"]] == ["by_book", "by_shelf"]


def _node_schema_json(*args: str) -> dict:
    if shutil.which("node") is None or not (NODE_SDK / "node_modules").is_dir():
        pytest.fail("needs node and node-sdk/node_modules: run `make setup`")
    done = subprocess.run(
        ["node", str(NODE_SDK / "print-schema.mjs"), *args],
        capture_output=True,
        text=True,
        cwd=NODE_SDK,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.node
def test_python_schema_json_is_what_the_node_sdk_makes_of_the_generated_schema() -> None:
    """node-sdk/schema.json through @powersync/node's own Table and Schema.toJSON()."""
    assert _node_schema_json() == Schema(SYNCED_TABLES).to_json()
    assert _node_schema_json("--local-only") == Schema(GUEST_TABLES).to_json()
