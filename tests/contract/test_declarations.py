"""The declarations are consistent, and the shared value checks say yes and no where they must."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path

import pytest

from papyrus.contract import (
    PATCH,
    PUT,
    TABLES,
    Column,
    OnDelete,
    Table,
    Type,
    check_row_id,
    check_value,
    from_local,
    table,
    to_local,
    validate_row,
)

CONTRACT = Path(__file__).resolve().parents[2] / "src" / "papyrus" / "contract"


def test_tables_are_in_apply_order() -> None:
    """A table references only tables declared before it (or itself): parents apply first."""
    seen: set[str] = set()
    for declared in TABLES:
        for column in declared.references:
            assert column.references in seen | {declared.name}, (declared.name, column.name)
        seen.add(declared.name)
    assert len(seen) == len(TABLES)


def test_the_contract_imports_only_the_standard_library() -> None:
    for path in CONTRACT.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in {
                    "__future__",
                    "papyrus",
                    "dataclasses",
                    "enum",
                    "functools",
                    "re",
                    "json",
                    "math",
                    "uuid",
                    "datetime",
                    "typing",
                    "collections",
                    "argparse",  # the render's command line (papyrus.contract.powersync)
                    "pathlib",
                    "sys",
                }, name
                if top == "papyrus":
                    assert name.startswith("papyrus.contract"), name


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Column("title", Type.TEXT),  # text without a bound
        lambda: Column("n", Type.INTEGER, length=(0, 3)),
        lambda: Column("ref", Type.ID),  # an id that references nothing
        lambda: Column(
            "ref", Type.ID, references="books", required=True, on_delete=OnDelete.SET_NULL
        ),
        lambda: Column("id", Type.ID, references="books"),  # reserved
        lambda: Table("t", "", (Column("a", Type.INTEGER),), closed_by="b"),  # unknown column
    ],
)
def test_inconsistent_declarations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        bad()  # type: ignore[operator]


def test_membership_ids_are_derived_from_the_pair() -> None:
    shelves = table("book_shelves")
    book, shelf = str(uuid.uuid4()), str(uuid.uuid4())
    row_id = check_row_id(shelves, f"{book}:{shelf}".upper())
    assert row_id == f"{book}:{shelf}"
    assert validate_row(shelves, PUT, row_id, {"book_id": book, "shelf_id": shelf})[1] == []
    swapped = check_row_id(shelves, f"{shelf}:{book}")
    assert swapped is not None
    problems = validate_row(shelves, PUT, swapped, {"book_id": book, "shelf_id": shelf})[1]
    assert [p.code for p in problems] == ["invalid_id"]
    assert check_row_id(shelves, book) is None
    assert check_row_id(table("books"), f"{book}:{shelf}") is None


def test_put_fills_defaults_and_requires_required_columns() -> None:
    values, problems = validate_row(table("annotations"), PUT, str(uuid.uuid4()), {})
    assert {p.code for p in problems} == {"missing_field"}
    assert {p.message.split(":")[0] for p in problems} == {"book_id", "selected_text", "location"}
    values, problems = validate_row(table("books"), PUT, str(uuid.uuid4()), {"title": "Dune"})
    assert problems == [] and values == {"title": "Dune", "is_favorite": False}


def test_patch_cannot_touch_immutable_columns_or_closed_history_fields() -> None:
    problems = validate_row(
        table("bookmarks"), PATCH, str(uuid.uuid4()), {"book_id": str(uuid.uuid4())}
    )[1]
    assert [p.code for p in problems] == ["immutable_field"]


def test_unknown_fields_and_foreign_owner_are_refused_and_stamps_ignored() -> None:
    me = str(uuid.uuid4())
    row_id = str(uuid.uuid4())
    data = {
        "title": "x",
        "colour": "red",
        "owner_user_id": str(uuid.uuid4()),
        "updated_at": "whatever",
    }
    codes = [p.code for p in validate_row(table("books"), PUT, row_id, data, owner=me)[1]]
    assert codes == ["unknown_field", "owner_mismatch"]
    values, problems = validate_row(
        table("books"),
        PUT,
        row_id,
        {"title": "x", "owner_user_id": me, "id": row_id.upper(), "added_at": "nonsense"},
        owner=me,
    )
    assert problems == [] and "added_at" not in values


def test_row_rules_compare_instants_not_text() -> None:
    row_id = str(uuid.uuid4())
    ok = {
        "title": "x",
        "started_at": "2026-01-01T10:00:00+02:00",
        "finished_at": "2026-01-01T09:00:00Z",
    }
    assert validate_row(table("books"), PUT, row_id, ok)[1] == []
    bad = {**ok, "finished_at": "2026-01-01T07:59:59Z"}
    assert [p.code for p in validate_row(table("books"), PUT, row_id, bad)[1]] == ["invalid_value"]


@pytest.mark.parametrize(
    ("table_name", "column", "good", "bad"),
    [
        ("books", "title", "Dune", ["", "x" * 501, "a\x00b", "\ud800", 3]),
        ("books", "rating", 5, [0, 6, 2.5, True, "5"]),
        ("books", "current_position", 0.5, [-0.1, 1.5, float("nan"), False]),
        ("books", "is_favorite", 1, [2, "yes"]),
        ("books", "reading_status", "reading", ["Reading", "done"]),
        ("books", "co_authors", '["A", "B"]', ['{"a": 1}', "[1]", "not json", ["x" * 501]]),
        ("books", "custom_metadata", {"k": [1, 2]}, [[1], "[]", {"k": "x" * 20_000}]),
        ("books", "started_at", "2026-11-30T10:00:00Z", ["2026-11-30T10:00:00", "yesterday", 5]),
        ("books", "series_id", "32a6f100-1b22-4ddd-9711-ea325cfa89f6", ["nope", 7]),
        ("shelves", "color", "#a0B1c2", ["red", "#12345", "#1234567"]),
        ("annotations", "color", "pink", ["#ff00ff", "Pink"]),
        (
            "annotations",
            "location",
            {"cfi": "epubcfi(/6/4)", "fraction": 0.25},
            [{}, {"page": -1}, {"fraction": 2}, {"line": 3}, {"cfi": ""}, [], "{}"],
        ),
        ("reading_goals", "period_start", "2026-01-01", ["2026-1-1", "2026-02-30", "20260101"]),
        ("reading_goals", "kind", "pages", ["chapters"]),
    ],
)
def test_values(table_name: str, column: str, good: object, bad: list[object]) -> None:
    declared = table(table_name).column(column)
    check_value(declared, good)
    for value in bad:
        with pytest.raises(ValueError):
            check_value(declared, value)


def test_sqlite_encoding_round_trips() -> None:
    books = table("books")
    for name, value in [
        ("is_favorite", True),
        ("co_authors", ["A"]),
        ("rating", 3),
        ("custom_metadata", {"a": {"b": None}}),
    ]:
        column = books.column(name)
        local = to_local(column, value)
        assert isinstance(local, int | str)
        assert from_local(column, local) == value
        assert check_value(column, local) == value
