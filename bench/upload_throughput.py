"""Upload throughput: PowerSync upload transactions over real HTTP vs a direct multi-row upsert.

    .venv/bin/python bench/upload_throughput.py [--requests 100] [--ops 500] [--workers 1]

Starts an embedded PostgreSQL in a temporary directory (the same configuration `papyrus dev`
uses, durable), migrates it and runs `papyrus serve` against it in a child process. Then:

1. upload: `--requests` sequential POST /v1/sync/powersync-upload requests of `--ops` PUTs each
   (new books, shaped as a SQLite client uploads them), over one keep-alive HTTP connection;
2. baseline: the same rows written straight into PostgreSQL, one multi-row
   `INSERT ... SELECT FROM unnest(...) ON CONFLICT (id) DO UPDATE` per batch, one transaction
   each: the physical cost of the writes with no HTTP, auth or validation.

Prints operations per second for both and the ratio. Not a test: numbers vary by machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from papyrus.embedded_db import EmbeddedPostgres
from papyrus.server import migrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--ops", type=int, default=500, help="PUTs per request (max 1000)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="papyrus-bench-") as tmp:
        data_dir = Path(tmp)
        database = EmbeddedPostgres(data_dir)
        info = database.start()
        try:
            url = info.url()
            migrate.upgrade(url)
            owner, upload_rate = _run_uploads(url, data_dir, args)
            baseline_rate = _run_baseline(info.conninfo(), owner, args)
        finally:
            database.stop()

    total = args.requests * args.ops
    print(f"operations per run:  {total} ({args.requests} requests x {args.ops} PUTs)")
    print(f"upload over HTTP:    {upload_rate:10.0f} ops/s")
    print(f"direct upsert:       {baseline_rate:10.0f} ops/s")
    print(f"upload / baseline:   {upload_rate / baseline_rate:10.1%}")


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


def _run_uploads(url: str, data_dir: Path, args: argparse.Namespace) -> tuple[str, float]:
    port = _free_port()
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
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            _wait_ready(client)
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
            bodies = []
            for request in range(args.requests + 1):  # the first one warms up, untimed
                batch = [
                    {
                        "op": "PUT",
                        "type": "books",
                        "id": row.pop("id"),
                        "data": row,
                        "op_id": request * args.ops + n,
                        "tx_id": request,
                    }
                    for n, row in enumerate(_books(args.ops, owner))
                ]
                bodies.append(json.dumps({"batch": batch}).encode())
            _post(client, headers, bodies[0])
            started = time.perf_counter()
            for body in bodies[1:]:
                _post(client, headers, body)
            elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    return owner, args.requests * args.ops / elapsed


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


def _run_baseline(conninfo: str, owner: str, args: argparse.Namespace) -> float:
    batches = []
    for _ in range(args.requests + 1):
        rows = _books(args.ops, owner)
        columns = {name: [row[name] for row in rows] for name in rows[0] if name != "owner_user_id"}
        columns["is_favorite"] = [bool(v) for v in columns["is_favorite"]]
        batches.append({"owner": uuid.UUID(owner), **columns})
    with psycopg.connect(conninfo) as conn:
        conn.execute("TRUNCATE books")
        conn.commit()
        conn.execute(_BASELINE_SQL, batches[0])  # warm-up, untimed
        conn.commit()
        started = time.perf_counter()
        for params in batches[1:]:
            conn.execute(_BASELINE_SQL, params)
            conn.commit()
        elapsed = time.perf_counter() - started
    return args.requests * args.ops / elapsed


def _wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if client.get("/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
