"""Large transactions: a Python client's 20,000-book transaction end to end, and the API's time
and memory for a staged upload at the whole-transaction limits.

    .venv/bin/python bench/big_upload.py [--books 20000] [--limit-ops 100000]

1. End to end: embedded PostgreSQL, the API and the development sync service on loopback; a
   signed-in Python client adds `--books` books in one `write_transaction()`. Prints the local
   write time and the time from the commit returning until the upload queue is empty (the API
   answered `applied` for the whole transaction, so PostgreSQL holds every book), with the
   number of part requests it took.
2. At the limits: `papyrus serve` in a child process; one transaction of `--limit-ops` PUTs
   filling the byte limit too (descriptions sized to fit), sent in parts over HTTP. Prints the
   time the last part took (assembly and apply) and the API process's peak RSS (VmHWM) before
   and after.

Not a test: numbers vary by machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from papyrus.client import AuthProvider, PapyrusApiConfig, SyncOptions
from papyrus.client import limits as client_limits
from papyrus.client.connector import encode_entry, encode_part, split_into_parts
from papyrus.devsync.config import Settings as SyncSettings
from papyrus.devsync.service import DevSyncService
from papyrus.devsync.service import create_app as create_sync_app
from papyrus.embedded_db import EmbeddedPostgres
from papyrus.server import migrate
from papyrus.server.app import create_app
from papyrus.server.config import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client_sync import free_port, serve

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"
PARTS = "/v1/sync/powersync-upload/parts"


def end_to_end(tmp: Path, url: str, conninfo: str, books: int) -> None:
    api_port, sync_port = free_port(), free_port()
    settings = Settings(
        _env_file=None,
        PAPYRUS_ENV="test",
        DATA_DIR=tmp / "data",
        DATABASE_URL=url,
        ACCESS_TOKEN_SECRET=secrets.token_urlsafe(32),
        RATE_LIMIT_AUTH_IP_PER_MINUTE=100_000,
    )
    servers = [serve(create_app(settings), api_port)]
    api = f"http://127.0.0.1:{api_port}"
    sync_settings = SyncSettings(
        database_url=url,
        jwks_uri=f"{api}/v1/auth/jwks",
        audiences=(settings.POWERSYNC_JWT_AUDIENCE,),
        sync_config_path=REPO / "server" / "powersync" / "sync-config.yaml",
        port=sync_port,
    )
    service = DevSyncService(sync_settings)
    servers.append(serve(create_sync_app(sync_settings, service), sync_port))
    while not (service.ready is not None and service.ready.is_set()):
        time.sleep(0.05)
    config = PapyrusApiConfig(
        api_url=api,
        powersync_url=f"http://127.0.0.1:{sync_port}",
        data_dir=tmp / "client",
        token_store="file",
    )
    options = SyncOptions(crud_upload_throttle=0.05)
    try:
        with AuthProvider(config, sync_options=options) as app:
            app.register("bench@example.com", PASSWORD, "Bench")
            app.database.wait_for_first_sync(30)
            started = time.perf_counter()
            with app.database.write_transaction():
                for i in range(books):
                    app.library.add(f"Book {i}", author=f"Author {i % 500}", page_count=i)
            committed = time.perf_counter()
            app.database.wait_for_status(lambda s: s.upload_queue_size == 0, timeout=600)
            uploaded = time.perf_counter()
            with psycopg.connect(conninfo) as conn:
                stored = conn.execute("SELECT count(*) FROM books").fetchone()[0]
        parts = -(-books // client_limits.MAX_REQUEST_OPERATIONS)  # short rows: count-bound
        print(f"{books:,} books in one write_transaction():")
        print(f"  local write:                    {committed - started:7.2f} s")
        print(f"  commit -> uploaded (in PG):     {uploaded - committed:7.2f} s  ({parts} parts)")
        print(f"  books in PostgreSQL:            {stored:,}")
    finally:
        if service.loop is not None:
            service.loop.call_soon_threadsafe(service.begin_shutdown)
        for server in servers:
            server.should_exit = True
        time.sleep(1)


def at_the_limits(tmp: Path, url: str, operations: int) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PAPYRUS_ENV": "development",
        "DATA_DIR": str(tmp / "serve"),
        "DATABASE_URL": url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32),
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_AUTH_IP_PER_MINUTE": "100000",
    }
    (tmp / "serve").mkdir()
    command = [sys.executable, "-m", "papyrus.cli.main", "serve", "--no-migrate"]
    server = subprocess.Popen([*command, "--port", str(port)], env=env, cwd=tmp / "serve")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            account = client.post(
                "/v1/auth/register",
                json={
                    "email": "limits@example.com",
                    "password": PASSWORD,
                    "display_name": "Limits",
                    "client_type": "cli",
                },
            ).json()
            headers = {
                "Authorization": f"Bearer {account['access_token']}",
                "Content-Type": "application/json",
            }
            owner = account["user"]["id"]
            # Descriptions sized so that the transaction fills the byte limit as well.
            base = len(encode_entry(_entry(0, owner, "")))
            budget = int(client_limits.MAX_TRANSACTION_BYTES * 0.97)
            operations = min(operations, budget // base)  # the bytes bind first
            room = budget // operations - base
            description = ("A description of moderate length. " * 1000)[: max(room, 0)]
            entries = [encode_entry(_entry(i, owner, description)) for i in range(operations)]
            total = sum(len(e) for e in entries)
            parts = split_into_parts(entries)
            upload_id = uuid.uuid4()
            bodies = [encode_part(upload_id, i, len(parts), 1, p) for i, p in enumerate(parts)]
            body_bytes = sum(len(b) for b in bodies)
            print(
                f"one transaction of {operations:,} PUTs, {total / 2**20:.1f} MiB of entries, "
                f"{body_bytes / 2**20:.1f} MiB in {len(parts)} parts "
                f"(limit {client_limits.MAX_TRANSACTION_BYTES / 2**20:.0f} MiB):"
            )
            del entries, parts
            started = time.perf_counter()
            for body in bodies[:-1]:
                response = client.post(PARTS, content=body, headers=headers)
                assert response.status_code == 202, response.text[:300]
            staged = time.perf_counter()
            before = _peak_rss(server.pid)
            response = client.post(PARTS, content=bodies[-1], headers=headers)
            done = time.perf_counter()
            result = response.json()
            assert result.get("status") == "applied", response.text[:300]
            print(f"  staging the other parts:        {staged - started:7.2f} s")
            print(f"  last part (assemble + apply):   {done - staged:7.2f} s")
            print(f"  API peak RSS before last part:  {before / 1024:7.0f} MB")
            print(f"  API peak RSS after:             {_peak_rss(server.pid) / 1024:7.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=30)


def _entry(i: int, owner: str, description: str) -> dict:
    return {
        "op_id": i + 1,
        "op": "PUT",
        "type": "books",
        "id": str(uuid.uuid4()),
        "tx_id": 1,
        "data": {
            "owner_user_id": owner,
            "title": f"Book {i}",
            "author": "An Author",
            "co_authors": json.dumps(["Second Author"]),
            "isbn13": "978-0141439549",
            "language": "en",
            "page_count": 320 + i % 100,
            "description": description,
            "reading_status": "reading",
            "is_favorite": i % 2,
            "rating": 1 + i % 5,
            "added_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
        },
    }


def _peak_rss(pid: int) -> int:
    """kB, the process's high-water mark."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", type=int, default=20_000)
    parser.add_argument("--limit-ops", type=int, default=client_limits.MAX_TRANSACTION_OPERATIONS)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="papyrus-bench-"))
    pg = EmbeddedPostgres(tmp / "pg", fast=True)
    info = pg.start()
    try:
        with psycopg.connect(info.conninfo("postgres"), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "e2e"')
            conn.execute('CREATE DATABASE "limits"')
        for name in ("e2e", "limits"):
            migrate.upgrade(info.url(name))
        end_to_end(tmp, info.url("e2e"), info.conninfo("e2e"), args.books)
        at_the_limits(tmp, info.url("limits"), args.limit_ops)
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
