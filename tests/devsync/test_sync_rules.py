"""Parsing the sync config subset, refusing everything else by name."""

from __future__ import annotations

import json

import pytest

from papyrus.contract import TABLES, table
from papyrus.devsync.sync_rules import (
    RequestContext,
    SyncConfigError,
    load_sync_config,
    parse_sync_config,
)
from tests.conftest import SYNC_CONFIG

ALICE = "11111111-1111-4111-8111-111111111111"


def stream_config(query: str, **options: object) -> str:
    extra = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in options.items())
    return (
        "config:\n  edition: 2\nstreams:\n  s:\n    auto_subscribe: true\n"
        f"    query: {json.dumps(query)}{extra}\n"
    )


def test_project_sync_config_parses_and_evaluates() -> None:
    """One auto-subscribed stream per declared table, each bucket holding one user's rows."""
    config = load_sync_config(SYNC_CONFIG)
    assert config.tables() == {("public", t.name) for t in TABLES}
    row = {
        "id": "aaaaaaaa-0000-4000-8000-000000000001",
        "owner_user_id": ALICE,
        "title": "Dune",
        "co_authors": '["Brian Herbert"]',
        "is_favorite": 1,
        "current_position": 0.5,
        "secret_column": "not selected",
    }
    (evaluated,) = config.evaluate("public", "books", row)
    assert evaluated.bucket == f'1#books|0["{ALICE}"]'
    assert evaluated.object_type == "books"
    assert evaluated.object_id == row["id"]
    data = json.loads(evaluated.data)
    assert list(data) == ["id", "owner_user_id", *table("books").column_names]
    assert data["co_authors"] == '["Brian Herbert"]'
    assert data["series_id"] is None
    assert "secret_column" not in data

    membership = {"id": "b:s", "owner_user_id": ALICE, "book_id": "b", "shelf_id": "s"}
    (evaluated,) = config.evaluate("public", "book_shelves", membership)
    assert evaluated.bucket == f'1#book_shelves|0["{ALICE}"]'
    assert evaluated.object_id == "b:s"

    resolved = config.resolve(RequestContext(ALICE, {"sub": ALICE}), None)
    assert [b.bucket for b in resolved.buckets] == [f'1#{t.name}|0["{ALICE}"]' for t in TABLES]
    # Each bucket is there by default through its stream (an index into `streams`).
    assert [b.subscriptions for b in resolved.buckets] == [
        ({"default": i},) for i in range(len(TABLES))
    ]
    assert resolved.streams == [{"name": t.name, "is_default": True, "errors": []} for t in TABLES]


def test_edition_3_streams_evaluate_like_edition_2() -> None:
    query = "SELECT id, owner_user_id::text AS owner_user_id, title FROM books"
    rows = []
    for edition in (2, 3):
        text = stream_config(query + " WHERE owner_user_id = auth.user_id()")
        config = parse_sync_config(text.replace("edition: 2", f"edition: {edition}"))
        rows.append(config.evaluate("public", "books", {"id": "b1", "owner_user_id": ALICE}))
    assert rows[0] == rows[1] and rows[0][0].bucket == f'1#s|0["{ALICE}"]'


def test_null_owner_matches_no_bucket() -> None:
    config = load_sync_config(SYNC_CONFIG)
    assert config.evaluate("public", "books", {"id": "x", "owner_user_id": None}) == []


def test_capture_config_bucket_and_row_format() -> None:
    config = parse_sync_config(
        stream_config(
            "SELECT book_id AS id, owner_user_id::text AS owner_user_id, title FROM books"
            " WHERE owner_user_id::text = auth.user_id()"
        ).replace("  s:", "  books:")
    )
    (evaluated,) = config.evaluate(
        "public",
        "books",
        {
            "book_id": "aaaaaaaa-0000-4000-8000-000000000001",
            "owner_user_id": ALICE,
            "title": "Dune",
        },
    )
    assert evaluated.bucket == f'1#books|0["{ALICE}"]'
    assert evaluated.data == (
        f'{{"id":"aaaaaaaa-0000-4000-8000-000000000001","owner_user_id":"{ALICE}","title":"Dune"}}'
    )


def test_parameters_filters_and_subscriptions() -> None:
    config = parse_sync_config(
        "config:\n  edition: 2\nstreams:\n"
        "  shelf:\n    priority: 1\n    query: SELECT * FROM books WHERE shelf_id ="
        " subscription.parameter('shelf') AND org = auth.parameter('org')"
        " AND deleted_at IS NULL AND kind = 'book'\n"
    )
    stream = config.streams[0]
    assert not stream.auto_subscribe
    row = {"id": "b1", "shelf_id": "s1", "org": 7, "deleted_at": None, "kind": "book"}
    (evaluated,) = config.evaluate("public", "books", row)
    assert evaluated.bucket == '1#shelf|0["s1",7]'
    assert config.evaluate("public", "books", {**row, "deleted_at": "2026"}) == []
    assert config.evaluate("public", "books", {**row, "kind": "film"}) == []

    ctx = RequestContext("u1", {"sub": "u1", "org": 7.0})
    request = {"subscriptions": [{"stream": "shelf", "parameters": {"shelf": "s1"}}]}
    resolved = config.resolve(ctx, request)
    assert [b.bucket for b in resolved.buckets] == ['1#shelf|0["s1",7]']
    assert resolved.buckets[0].subscriptions == ({"sub": 0},)
    assert resolved.buckets[0].priority == 1
    assert resolved.streams == [{"name": "shelf", "is_default": False, "errors": []}]
    assert config.resolve(ctx, {"subscriptions": []}).buckets == []


def test_legacy_bucket_definitions() -> None:
    config = parse_sync_config(
        "config:\n  edition: 2\nbucket_definitions:\n  user_books:\n"
        "    parameters: SELECT request.user_id() AS user_id\n"
        "    data:\n      - SELECT id, title FROM books WHERE owner_user_id = bucket.user_id\n"
    )
    (evaluated,) = config.evaluate(
        "public", "books", {"id": "b", "title": "t", "owner_user_id": "u"}
    )
    assert evaluated.bucket == '1#user_books["u"]'
    resolved = config.resolve(RequestContext("u", {"sub": "u"}), None)
    assert [b.bucket for b in resolved.buckets] == ['1#user_books["u"]']


@pytest.mark.parametrize(
    ("query", "construct"),
    [
        ("SELECT b.* FROM books b JOIN shelves s ON s.id = b.shelf_id", "JOIN"),
        ("SELECT * FROM books, shelves", "exactly one table"),
        ("SELECT * FROM (SELECT * FROM books) b", "subquery in FROM"),
        (
            "SELECT * FROM books WHERE shelf_id IN (SELECT id FROM shelves"
            " WHERE owner = auth.user_id())",
            "subquery",
        ),
        ("SELECT * FROM books WHERE upper(title) = auth.user_id()", "function upper()"),
        ("SELECT * FROM books WHERE lower(title) = 'x'", "function lower()"),
        ("SELECT upper(title) AS t FROM books", "function upper()"),
        ("SELECT owner_user_id FROM books GROUP BY owner_user_id", "GROUP BY"),
        ("SELECT * FROM books ORDER BY title", "ORDER BY"),
        ("SELECT * FROM books LIMIT 5", "LIMIT"),
        ("SELECT DISTINCT title FROM books", "DISTINCT"),
        ("WITH x AS (SELECT 1) SELECT * FROM books", "WITH"),
        ("SELECT * FROM books UNION SELECT * FROM books", "UNION"),
        ("SELECT * FROM books WHERE a = auth.user_id() OR b = 1", "OR in WHERE"),
        ("SELECT * FROM books WHERE a > 1", "operator '>'"),
        ("SELECT * FROM books WHERE == 5", "operator '=='"),  # prefix: no left operand
        ("SELECT id::uuid AS id FROM books", "cast to uuid"),
        ("SELECT * FROM books WHERE owner = request.user_id()", "function request.user_id()"),
        ("UPDATE books SET title = 'x'", "UpdateStmt"),
    ],
)
def test_unsupported_constructs_are_refused_by_name(query: str, construct: str) -> None:
    with pytest.raises(SyncConfigError) as info:
        parse_sync_config(stream_config(query))
    message = str(info.value)
    assert construct in message
    assert "stream 's'" in message
    assert "PowerSync service" in message


@pytest.mark.parametrize(
    ("text", "construct"),
    [
        ("config:\n  edition: 1\nstreams: {}\n", "edition 1"),
        ("config:\n  edition: 4\nstreams: {}\n", "edition 4"),
        (
            "config:\n  edition: 2\n  timestamps_iso8601: false\nstreams: {}\n",
            "config option 'timestamps_iso8601'",
        ),
        ("config:\n  edition: 2\nevent_definitions: {}\n", "top-level key 'event_definitions'"),
        (
            "config:\n  edition: 2\nstreams:\n  s:\n    queries: [SELECT * FROM a]\n",
            "stream option 'queries'",
        ),
        (
            "config:\n  edition: 2\nstreams:\n  s:\n    with:\n      x: SELECT 1\n"
            "    query: SELECT * FROM a\n",
            "stream option 'with'",
        ),
        (
            "config:\n  edition: 2\nbucket_definitions:\n  b:\n    parameters: SELECT id AS x"
            " FROM lists WHERE owner = request.user_id()\n    data: [SELECT * FROM a]\n",
            "parameter query with FROM",
        ),
    ],
)
def test_unsupported_config_is_refused_by_name(text: str, construct: str) -> None:
    with pytest.raises(SyncConfigError, match="not supported") as info:
        parse_sync_config(text)
    assert construct in str(info.value)


def test_edition_3_has_no_bucket_definitions() -> None:
    text = (
        "config:\n  edition: 3\nbucket_definitions:\n  b:\n"
        "    parameters: SELECT request.user_id() AS u\n"
        "    data: [SELECT * FROM books WHERE owner_user_id = bucket.u]\n"
    )
    parse_sync_config(text.replace("edition: 3", "edition: 2"))
    with pytest.raises(SyncConfigError, match="edition 3 has no bucket_definitions"):
        parse_sync_config(text)
