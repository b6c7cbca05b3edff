"""Upload throughput: PowerSync upload transactions over real HTTP vs a direct multi-row upsert.

    .venv/bin/python bench/upload_throughput.py [--requests 100] [--ops 500] [--workers 1]
                                                [--scenario both|books|mixed]

Starts an embedded PostgreSQL in a temporary directory (the same configuration `papyrus dev`
uses, durable), migrates it and runs `papyrus serve` against it in a child process. Then, for
each scenario:

1. upload: `--requests` sequential POST /v1/sync/powersync-upload requests of `--ops` PUTs each
   (shaped as a SQLite client uploads them), over one keep-alive HTTP connection;
2. baseline: as many batches of the same kind of rows written straight into PostgreSQL, one
   multi-row `INSERT ... SELECT FROM unnest(...) ON CONFLICT (id) DO UPDATE` per table and
   batch, one transaction each: the physical cost of the writes with no HTTP, auth or
   validation.

Upload requests and baseline batches alternate, so on a shared machine both meet the same load
(and the same table sizes); each side's time is summed separately. The first request and batch
of each scenario warm up untimed, then the database is analysed, so both sides are timed with
fresh planner statistics (as autovacuum keeps them in a running service).

Scenarios: `books` (new books only) and `mixed` (per book: the book, its membership of one of
20 shelves, two highlights and a reading session, all in one transaction).

Prints operations per second for both and the ratio. Not a test: numbers vary by machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from common import free_port, wait_ready

from papyrus.embedded_db import EmbeddedPostgres
from papyrus.server import migrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--ops", type=int, default=500, help="PUTs per request (max 1000)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--scenario", choices=("both", "books", "mixed"), default="both")
    args = parser.parse_args()
    scenarios = ("books", "mixed") if args.scenario == "both" else (args.scenario,)

    with tempfile.TemporaryDirectory(prefix="papyrus-bench-") as tmp:
        data_dir = Path(tmp)
        database = EmbeddedPostgres(data_dir)
        info = database.start()
        try:
            url = info.url()
            migrate.upgrade(url)
            results = _run(url, info.conninfo(), data_dir, args, scenarios)
        finally:
            database.stop()

    total = args.requests * args.ops
    print(f"operations per run:  {total} ({args.requests} requests x {args.ops} PUTs)")
    for scenario, (upload_rate, baseline_rate) in results.items():
        print(f"[{scenario}]")
        print(f"  upload over HTTP:  {upload_rate:10.0f} ops/s")
        print(f"  direct upsert:     {baseline_rate:10.0f} ops/s")
        print(f"  upload / baseline: {upload_rate / baseline_rate:10.1%}")


def _books(count: int, owner: str) -> list[dict]:
    """New books as a SQLite client uploads them: JSON columns as text, booleans as 0/1."""
    return [
        {
            "id": str(uuid.uuid4()),
            "owner_user_id": owner,
            "title": f"Book {i}",
            "author": "An Author",
            "co_authors": json.dumps(["Second Author", "Third Author"]),
            "isbn13": "978-0141439549",
            "language": "en",
            "page_count": 320 + i % 100,
            "description": "A description of moderate length. " * 4,
            "reading_status": "reading",
            "current_page": i % 300,
            "current_position": (i % 100) / 100,
            "is_favorite": i % 2,
            "rating": 1 + i % 5,
            "custom_metadata": json.dumps({"shelf": "fiction", "tags": ["a", "b"]}),
        }
        for i in range(count)
    ]


SHELVES = 20
LOCATION = json.dumps({"cfi": "epubcfi(/6/4!/4/2/1:0)", "fraction": 0.25})


def _mixed(count: int, owner: str, shelves: list[str]) -> list[tuple[str, dict]]:
    """`count` operations, parents first: per book, the book, one membership, two highlights and
    a reading session, as a SQLite client uploads them."""
    rows: list[tuple[str, dict]] = []
    book_rows = _books(count // 5 + 1, owner)
    for i, book in enumerate(book_rows):
        shelf = shelves[i % len(shelves)]
        rows.append(("books", book))
        rows.append(
            (
                "book_shelves",
                {"id": f"{book['id']}:{shelf}", "book_id": book["id"], "shelf_id": shelf},
            )
        )
        for n in range(2):
            rows.append(
                (
                    "annotations",
                    {
                        "id": str(uuid.uuid4()),
                        "book_id": book["id"],
                        "selected_text": f"A highlighted passage, number {n}, of moderate length.",
                        "color": "yellow",
                        "location": LOCATION,
                        "note": None,
                    },
                )
            )
        rows.append(
            (
                "reading_sessions",
                {
                    "id": str(uuid.uuid4()),
                    "book_id": book["id"],
                    "started_at": "2026-01-01T10:00:00+00:00",
                    "ended_at": "2026-01-01T10:30:00+00:00",
                    "pages_read": 12,
                    "device_label": "bench",
                },
            )
        )
    return rows[:count]


def _run(
    url: str, conninfo: str, data_dir: Path, args: argparse.Namespace, scenarios: tuple[str, ...]
) -> dict[str, tuple[float, float]]:
    """Per scenario, (upload ops/s, baseline ops/s). Upload requests and baseline batches
    alternate, so both meet the same load on a shared machine and the same table sizes."""
    port = free_port()
    env = {
        **os.environ,
        "PAPYRUS_ENV": "development",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32),
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_AUTH_IP_PER_MINUTE": "100000",
    }
    command = [sys.executable, "-m", "papyrus.cli.main", "serve", "--no-migrate"]
    command += ["--port", str(port), "--workers", str(args.workers)]
    server = subprocess.Popen(command, env=env, cwd=data_dir)
    results = {}
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client, psycopg.connect(conninfo) as conn:
            wait_ready(base)
            account = client.post(
                "/v1/auth/register",
                json={
                    "email": "bench@example.com",
                    "password": "benchmark-password",
                    "display_name": "Bench",
                    "client_type": "cli",
                },
            ).json()
            owner = account["user"]["id"]
            headers = {"Authorization": f"Bearer {account['access_token']}"}
            shelves = [str(uuid.uuid4()) for _ in range(SHELVES)]
            batch = [
                {"op": "PUT", "type": "shelves", "id": s, "data": {"name": f"Shelf {n}"}}
                for n, s in enumerate(shelves)
            ]
            _post(client, headers, json.dumps({"batch": batch}).encode())
            for scenario in scenarios:
                uploads, baselines = [], []
                for request in range(args.requests + 1):  # the first ones warm up, untimed
                    uploads.append(_upload_body(scenario, request, owner, shelves, args.ops))
                    baselines.append(_baseline_batch(scenario, owner, shelves, args.ops))
                upload_time = baseline_time = 0.0
                for request, (body, statements) in enumerate(zip(uploads, baselines, strict=True)):
                    started = time.perf_counter()
                    _post(client, headers, body)
                    middle = time.perf_counter()
                    for sql, params in statements:
                        conn.execute(sql, params)
                    conn.commit()
                    if request:
                        upload_time += middle - started
                        baseline_time += time.perf_counter() - middle
                    else:
                        _analyze(conn)
                total = args.requests * args.ops
                results[scenario] = (total / upload_time, total / baseline_time)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return results


def _analyze(conn: psycopg.Connection) -> None:
    """Fresh statistics for both sides after the warm-up. Without them the planner cannot tell
    the owner index (every row here is one user's) from the unique keys, and the foreign-key
    check's plan, cached per connection from the first checks, may walk the owner index: a
    whole library per referencing row (see "Foreign-key checks and statistics" in
    bench/README.md). ANALYZE also invalidates the plans cached so far."""
    conn.execute("ANALYZE")
    conn.commit()


def _rows(scenario: str, owner: str, shelves: list[str], ops: int) -> list[tuple[str, dict]]:
    if scenario == "books":
        return [("books", row) for row in _books(ops, owner)]
    return _mixed(ops, owner, shelves)


def _upload_body(scenario: str, request: int, owner: str, shelves: list[str], ops: int) -> bytes:
    batch = [
        {
            "op": "PUT",
            "type": table,
            "id": row.pop("id"),
            "data": row,
            "op_id": request * ops + n,
            "tx_id": request,
        }
        for n, (table, row) in enumerate(_rows(scenario, owner, shelves, ops))
    ]
    return json.dumps({"batch": batch}).encode()


def _post(client: httpx.Client, headers: dict[str, str], body: bytes) -> None:
    response = client.post(
        "/v1/sync/powersync-upload",
        content=body,
        headers={**headers, "content-type": "application/json"},
    )
    result = response.json()
    if response.status_code != 200 or result.get("status") != "applied":
        raise SystemExit(f"upload failed: {response.status_code} {response.text[:500]}")


_BASELINE_SQL = """
INSERT INTO books AS b (id, owner_user_id, title, author, co_authors, isbn13, language,
    page_count, description, reading_status, current_page, current_position, is_favorite,
    rating, custom_metadata, added_at, updated_at)
SELECT id, %(owner)s, title, author, co_authors, isbn13, language, page_count, description,
    reading_status, current_page, current_position, is_favorite, rating, custom_metadata,
    now(), now()
FROM unnest(%(id)s::uuid[], %(title)s::text[], %(author)s::text[], %(co_authors)s::jsonb[],
    %(isbn13)s::text[], %(language)s::text[], %(page_count)s::int[], %(description)s::text[],
    %(reading_status)s::text[], %(current_page)s::int[], %(current_position)s::float8[],
    %(is_favorite)s::bool[], %(rating)s::int[], %(custom_metadata)s::jsonb[])
    AS r(id, title, author, co_authors, isbn13, language, page_count, description,
         reading_status, current_page, current_position, is_favorite, rating, custom_metadata)
ON CONFLICT (id) DO UPDATE SET title = excluded.title, author = excluded.author,
    co_authors = excluded.co_authors, isbn13 = excluded.isbn13, language = excluded.language,
    page_count = excluded.page_count, description = excluded.description,
    reading_status = excluded.reading_status, current_page = excluded.current_page,
    current_position = excluded.current_position, is_favorite = excluded.is_favorite,
    rating = excluded.rating, custom_metadata = excluded.custom_metadata,
    updated_at = excluded.updated_at
WHERE b.owner_user_id = excluded.owner_user_id
"""


_MIXED_BASELINE_SQL = {
    "book_shelves": """
INSERT INTO book_shelves AS b (id, owner_user_id, book_id, shelf_id, added_at)
SELECT id, %(owner)s, book_id, shelf_id, now()
FROM unnest(%(id)s::text[], %(book_id)s::uuid[], %(shelf_id)s::uuid[]) AS r(id, book_id, shelf_id)
ON CONFLICT (id) DO UPDATE SET added_at = b.added_at
WHERE b.owner_user_id = excluded.owner_user_id
""",
    "annotations": """
INSERT INTO annotations AS b (id, owner_user_id, book_id, selected_text, color, location,
    note, created_at, updated_at)
SELECT id, %(owner)s, book_id, selected_text, color, location, note, now(), now()
FROM unnest(%(id)s::uuid[], %(book_id)s::uuid[], %(selected_text)s::text[], %(color)s::text[],
    %(location)s::jsonb[], %(note)s::text[])
    AS r(id, book_id, selected_text, color, location, note)
ON CONFLICT (id) DO UPDATE SET selected_text = excluded.selected_text, color = excluded.color,
    location = excluded.location, note = excluded.note, updated_at = excluded.updated_at
WHERE b.owner_user_id = excluded.owner_user_id
""",
    "reading_sessions": """
INSERT INTO reading_sessions AS b (id, owner_user_id, book_id, started_at, ended_at,
    pages_read, device_label, created_at)
SELECT id, %(owner)s, book_id, started_at, ended_at, pages_read, device_label, now()
FROM unnest(%(id)s::uuid[], %(book_id)s::uuid[], %(started_at)s::timestamptz[],
    %(ended_at)s::timestamptz[], %(pages_read)s::int[], %(device_label)s::text[])
    AS r(id, book_id, started_at, ended_at, pages_read, device_label)
ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at, pages_read = excluded.pages_read,
    device_label = excluded.device_label
WHERE b.owner_user_id = excluded.owner_user_id
""",
}


def _columns(rows: list[dict]) -> dict[str, list]:
    return {name: [row[name] for row in rows] for name in rows[0] if name != "owner_user_id"}


def _baseline_batch(
    scenario: str, owner: str, shelves: list[str], ops: int
) -> list[tuple[str, dict]]:
    """The same kind of rows as an upload request, as one multi-row upsert per table, parents
    first (run in one transaction)."""
    rows = _rows(scenario, owner, shelves, ops)
    statements = []
    for table in ("books", "book_shelves", "annotations", "reading_sessions"):
        chosen = [row for name, row in rows if name == table]
        if not chosen:
            continue
        params = {"owner": uuid.UUID(owner), **_columns(chosen)}
        if table == "books":
            params["is_favorite"] = [bool(v) for v in params["is_favorite"]]
            statements.append((_BASELINE_SQL, params))
        else:
            statements.append((_MIXED_BASELINE_SQL[table], params))
    return statements


if __name__ == "__main__":
    main()
