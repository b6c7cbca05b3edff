"""Benchmark of the development sync service against the issue's targets.

Run from the repository root: `.venv/bin/python -m tests.devsync.bench_devsync`
(not collected by pytest). Prints replication throughput for one 50,000-row transaction,
the time to download 100,000 books on a fresh connection, and commit-to-client latency.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import uvicorn

from papyrus.devsync.config import Settings
from papyrus.devsync.service import DevSyncService, create_app
from papyrus.embedded_db import EmbeddedPostgres

from .conftest import AUDIENCE, BOOKS_DDL, SYNC_CONFIG, Signer, _free_port, wait_for

USER = "11111111-1111-4111-8111-111111111111"
INSERT = """
INSERT INTO books (id, owner_user_id, title, subtitle, author, co_authors, isbn13, publisher,
                   language, page_count, description, reading_status, current_page,
                   current_position, is_favorite, rating, custom_metadata)
SELECT gen_random_uuid(), %s, 'Title ' || i, 'A subtitle', 'Author ' || (i %% 97),
       '["A", "B"]'::jsonb, lpad(i::text, 13, '9'), 'Publisher', 'en', 300 + i %% 500,
       repeat('Lorem ipsum dolor sit amet. ', 8), 'reading', i %% 300, (i %% 1000) / 1000.0,
       i %% 7 = 0, i %% 5, '{"shelf": "main"}'::jsonb
FROM generate_series(1, %s) i
"""


def main() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="devsync-bench-"))
    server = EmbeddedPostgres(data_dir, fast=True)
    info = server.start()
    try:
        run(info)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def run(info) -> None:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(info.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    conninfo = info.conninfo(name)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(BOOKS_DDL)
        conn.execute(INSERT, (USER, 50_000))  # part of the initial snapshot

    signer = Signer()
    signer.add_key()
    jwks = json.dumps(signer.jwks()).encode()
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args) -> None:
            pass

    jwks_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=jwks_server.serve_forever, daemon=True).start()

    port = _free_port()
    settings = Settings(
        database_url=conninfo,
        jwks_uri=f"http://127.0.0.1:{jwks_server.server_address[1]}/jwks",
        audiences=(AUDIENCE,),
        sync_config_path=SYNC_CONFIG,
        port=port,
        slot_name=f"slot_{name}",
    )
    service = DevSyncService(settings)
    started = time.perf_counter()
    uv = uvicorn.Server(
        uvicorn.Config(create_app(settings, service), port=port, log_level="warning")
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    wait_for(lambda: service.ready is not None and service.ready.is_set(), 120, "ready")
    print(f"initial snapshot of 50,000 rows: {time.perf_counter() - started:.2f} s")

    def last_op() -> int:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return conn.execute("SELECT last_op_id FROM powersync_dev.state").fetchone()[0]

    before = last_op()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(INSERT, (USER, 50_000))
    committed = time.perf_counter()
    cpu = time.process_time()
    wait_for(lambda: last_op() >= before + 50_000, 120, "replication")
    elapsed = time.perf_counter() - committed
    cpu = time.process_time() - cpu
    print(
        f"replication of one 50,000-row transaction: {elapsed:.2f} s = {50_000 / elapsed:,.0f}"
        f" ops/s ({cpu:.2f} CPU-s in this process)"
    )

    token = signer.token(USER)
    url = f"http://127.0.0.1:{port}"
    body = {"buckets": [], "raw_data": True, "client_id": "bench", "include_checksum": True}
    start = time.perf_counter()
    ops = 0
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST", f"{url}/sync/stream", json=body, headers={"Authorization": f"Token {token}"}
        ) as response,
    ):
        lines = response.iter_lines()
        for line in lines:
            parsed = json.loads(line)
            if "data" in parsed:
                ops += len(parsed["data"]["data"])
            if "checkpoint_complete" in parsed:
                break
        initial = time.perf_counter() - start
        print(f"initial sync of {ops:,} books: {initial:.2f} s")

        with psycopg.connect(conninfo, autocommit=True) as conn:
            book = conn.execute("SELECT id FROM books LIMIT 1").fetchone()[0]
            latencies = []
            for i in range(100):
                conn.execute("UPDATE books SET current_page = %s WHERE id = %s", (i, book))
                t0 = time.perf_counter()
                for line in lines:
                    if line.startswith('{"data"'):
                        latencies.append(time.perf_counter() - t0)
                    if line.startswith('{"checkpoint_complete"'):
                        break
    latencies.sort()
    print(
        f"commit -> client latency: p50 {statistics.median(latencies) * 1000:.1f} ms,"
        f" p95 {latencies[94] * 1000:.1f} ms"
    )
    service.loop.call_soon_threadsafe(service.begin_shutdown)
    uv.should_exit = True
    thread.join(30)
    jwks_server.shutdown()


if __name__ == "__main__":
    main()
