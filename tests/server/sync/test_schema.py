"""The database enforces the books rules too: named constraints, checked even outside the API."""

from __future__ import annotations

import uuid

import psycopg
import pytest


def test_check_constraints_are_named_by_the_convention(sql) -> None:
    names = {
        name
        for (name,) in sql(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'books'::regclass AND contype = 'c'"
        )
    }
    assert names == {
        "ck_books_title_length",
        "ck_books_page_count_non_negative",
        "ck_books_current_page_non_negative",
        "ck_books_current_position_range",
        "ck_books_rating_range",
        "ck_books_reading_status_valid",
        "ck_books_co_authors_array",
        "ck_books_custom_metadata_object",
    }
    indexes = {
        name for (name,) in sql("SELECT indexname FROM pg_indexes WHERE tablename = 'books'")
    }
    assert "ix_books_owner_user_id" in indexes


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("title", "''", "ck_books_title_length"),
        ("page_count", "-1", "ck_books_page_count_non_negative"),
        ("current_page", "-1", "ck_books_current_page_non_negative"),
        ("current_position", "1.01", "ck_books_current_position_range"),
        ("rating", "0", "ck_books_rating_range"),
        ("reading_status", "'paused'", "ck_books_reading_status_valid"),
        ("co_authors", "'{}'::jsonb", "ck_books_co_authors_array"),
        ("custom_metadata", "'[]'::jsonb", "ck_books_custom_metadata_object"),
    ],
)
def test_the_database_rejects_what_validation_rejects(sql, column, value, constraint) -> None:
    user_id = uuid.uuid4()
    sql(
        "INSERT INTO users (id, email, email_verified, display_name) VALUES (%s, %s, false, 'x')",
        (user_id, f"{user_id}@example.com"),
    )
    columns = {"id": f"'{uuid.uuid4()}'", "owner_user_id": f"'{user_id}'", "title": "'T'"}
    columns[column] = value
    with pytest.raises(psycopg.errors.CheckViolation) as excinfo:
        sql(f"INSERT INTO books ({', '.join(columns)}) VALUES ({', '.join(columns.values())})")
    assert excinfo.value.diag.constraint_name == constraint
