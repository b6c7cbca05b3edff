"""Client benchmark: initial sync of many books into a Python client and into an
`@powersync/node` client on the same stack, then local write throughput and watch() latency.

    .venv/bin/python bench/client_sync.py [--books 100000]

Boots everything on loopback: embedded PostgreSQL, the API, the development sync service.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from common import free_port

from papyrus.client import AuthProvider, BookRepository, PapyrusApiConfig, SyncOptions
from papyrus.devsync.config import Settings as SyncSettings
from papyrus.devsync.service import DevSyncService
from papyrus.devsync.service import create_app as create_sync_app
from papyrus.embedded_db import EmbeddedPostgres
from papyrus.server import migrate
from papyrus.server.app import create_app
from papyrus.server.config import Settings
from papyrus.sync_config import sync_config_path

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"


def serve(app: Any, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server


def seed(conninfo: str, owner: str, count: int) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO books (id, owner_user_id, title, author, page_count, description)"
            " SELECT gen_random_uuid(), %s, 'Book ' || i, 'Author ' || (i %% 500), 100 + i %% 900,"
            " repeat('x', 200) FROM generate_series(1, %s) AS i",
            (owner, count),
        )


def python_initial_sync(config: PapyrusApiConfig, expected: int) -> float:
    shutil.rmtree(config.data_dir, ignore_errors=True)  # a fresh device every round
    started = time.perf_counter()
    with AuthProvider(config, sync_options=SyncOptions(retry_delay=0.5)) as app:
        app.sign_in("bench@example.com", PASSWORD)
        assert app.database.wait_for_first_sync(900), app.database.status
        elapsed = time.perf_counter() - started
        assert app.library.count() == expected
    return elapsed


def node_initial_sync(tmp: Path, api: str, sync: str, expected: int) -> float | None:
    if shutil.which("node") is None or not (REPO / "node-sdk" / "node_modules").is_dir():
        print("node: skipped (run `make setup`)")
        return None
    sys.path.insert(0, str(REPO))
    from tests.e2e.node_client import NodeClient  # the same harness the interop tests use

    started = time.perf_counter()
    tokens = httpx.post(
        f"{api}/v1/auth/login",
        json={"email": "bench@example.com", "password": PASSWORD, "client_type": "cli"},
    ).json()
    for leftover in tmp.glob("node.db*"):
        leftover.unlink()
    node = NodeClient(tmp / "node.db", api, sync, tokens)
    try:
        node.call("connect")
        node.call("waitForFirstSync", timeout_ms=900_000)
        elapsed = time.perf_counter() - started
        assert node.rows("SELECT count(*) AS n FROM books")[0]["n"] == expected
    finally:
        node.close()
    return elapsed


def local_writes(config: PapyrusApiConfig, count: int) -> tuple[float, float]:
    """(single-row writes per second, rows per second in one transaction) on the guest db."""
    with AuthProvider(config, auto_connect=False) as app:
        books = BookRepository(app.guest_database)
        started = time.perf_counter()
        for i in range(count):
            books.add(f"Single {i}", page_count=i)
        single = count / (time.perf_counter() - started)
        started = time.perf_counter()
        with app.guest_database.write_transaction():
            for i in range(count):
                books.add(f"Batched {i}", page_count=i)
        batched = count / (time.perf_counter() - started)
    return single, batched


def watch_latency(config: PapyrusApiConfig, rounds: int) -> list[float]:
    """Seconds from a local write returning to watch() delivering the new list."""
    with AuthProvider(config, auto_connect=False) as app:
        books = BookRepository(app.guest_database)
        samples = []
        with books.watch(limit=5) as watch:
            watch.next(timeout=5)
            for i in range(rounds):
                started = time.perf_counter()
                books.add(f"Watched {i}")
                watch.next(timeout=5)
                samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=2_000)
    parser.add_argument(
        "--rounds", type=int, default=2, help="Alternate the clients; the best round counts."
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="papyrus-bench-"))
    pg = EmbeddedPostgres(tmp / "pg", fast=True)
    info = pg.start()
    servers: list[uvicorn.Server] = []
    sync_service: DevSyncService | None = None
    try:
        name = "bench"
        with psycopg.connect(info.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        migrate.upgrade(info.url(name))
        api_port, sync_port = free_port(), free_port()
        settings = Settings(
            _env_file=None,
            PAPYRUS_ENV="test",
            DATA_DIR=tmp / "data",
            DATABASE_URL=info.url(name),
            ACCESS_TOKEN_SECRET=uuid.uuid4().hex * 2,
            RATE_LIMIT_AUTH_IP_PER_MINUTE=100_000,
            POWERSYNC_TOKEN_TTL_SECONDS=3600,
        )
        servers.append(serve(create_app(settings), api_port))
        api = f"http://127.0.0.1:{api_port}"
        user = httpx.post(
            f"{api}/v1/auth/register",
            json={
                "email": "bench@example.com",
                "password": PASSWORD,
                "display_name": "Bench",
                "client_type": "cli",
            },
        ).json()["user"]
        seed(info.conninfo(name), user["id"], args.books)
        sync_settings = SyncSettings(
            database_url=info.url(name),
            jwks_uri=f"{api}/v1/auth/jwks",
            audiences=(settings.POWERSYNC_JWT_AUDIENCE,),
            sync_config_path=sync_config_path(),
            port=sync_port,
        )
        sync_service = DevSyncService(sync_settings)
        servers.append(serve(create_sync_app(sync_settings, sync_service), sync_port))
        while not (sync_service.ready is not None and sync_service.ready.is_set()):
            time.sleep(0.05)
        sync = f"http://127.0.0.1:{sync_port}"
        print(f"stack ready; {args.books} books for one user")

        config = PapyrusApiConfig(
            api_url=api, powersync_url=sync, data_dir=tmp / "python", token_store="file"
        )
        py_times: list[float] = []
        node_times: list[float] = []
        for round_no in range(args.rounds):
            # Alternating the order keeps warm caches from favouring one client.
            order = ["python", "node"] if round_no % 2 == 0 else ["node", "python"]
            for which in order:
                if which == "python":
                    py_times.append(python_initial_sync(config, args.books))
                else:
                    took = node_initial_sync(tmp, api, sync, args.books)
                    if took is not None:
                        node_times.append(took)
            print(
                f"round {round_no + 1}: python {py_times[-1]:.2f} s"
                + (f", node {node_times[-1]:.2f} s" if node_times else "")
            )
        py = min(py_times)
        print(f"initial sync, python client:        {py:7.2f} s  ({args.books / py:,.0f} rows/s)")
        if node_times:
            node = min(node_times)
            rate = args.books / node
            print(f"initial sync, @powersync/node:      {node:7.2f} s  ({rate:,.0f} rows/s)")
            print(f"python / node:                      {py / node:7.2f}x")

        guest = PapyrusApiConfig(api_url=api, data_dir=tmp / "guest", token_store="file")
        single, batched = local_writes(guest, args.writes)
        print(f"local writes, one per transaction:  {single:9,.0f} rows/s")
        print(f"local writes, one transaction:      {batched:9,.0f} rows/s")
        samples = watch_latency(guest, 200)
        p50 = statistics.median(samples) * 1000
        p95 = statistics.quantiles(samples, n=20)[18] * 1000
        print(f"watch() latency after a write:      p50 {p50:.2f} ms, p95 {p95:.2f} ms")
    finally:
        if sync_service is not None and sync_service.loop is not None:
            sync_service.loop.call_soon_threadsafe(sync_service.begin_shutdown)
        for server in servers:
            server.should_exit = True
        time.sleep(1)
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
