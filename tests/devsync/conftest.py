"""Fixtures: a real PostgreSQL (embedded), a database of the declared tables per test, signed
JWTs, a JWKS server and the development sync service running under uvicorn on loopback."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from papyrus.contract import table
from papyrus.contract.powersync import render_sync_config
from papyrus.devsync.config import Settings
from papyrus.devsync.replication import Replicator
from papyrus.devsync.sync_rules import SyncConfig, parse_sync_config
from papyrus.embedded_db import ServerInfo
from tests.conftest import SyncServer, drop_replication_slot, free_port, wait_for
from tests.library_schema import apply_declared_tables

# Lines recorded from the real PowerSync service 1.25.0 (what and how: the README there).
CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "powersync-captures"
AUDIENCE = "powersync-dev"

# The protocol tests run on one stream, the books; tests of the whole library use SYNC_CONFIG.
BOOKS_CONFIG = render_sync_config((table("books"),))

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg(pg_server: ServerInfo) -> ServerInfo:
    """The run's one PostgreSQL; each test gets its own database in it (`source_db`)."""
    return pg_server


@dataclass
class SourceDb:
    """A fresh database with every declared table, all in the `powersync` publication."""

    info: ServerInfo
    name: str
    conninfo: str
    slot_name: str

    def execute(self, query: str, params: Any = None) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(query, params)

    def fetchall(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def insert_book(self, owner: str, title: str, book_id: str | None = None, **cols: Any) -> str:
        book_id = book_id or str(uuid.uuid4())
        names = ["id", "owner_user_id", "title", *cols]
        placeholders = ", ".join(["%s"] * len(names))
        self.execute(
            f"INSERT INTO books ({', '.join(names)}) VALUES ({placeholders})",
            [book_id, owner, title, *cols.values()],
        )
        return book_id

    def ops(self) -> list[tuple[Any, ...]]:
        return self.fetchall(
            "SELECT op_id, bucket, op, object_id, subkey, data, checksum"
            " FROM powersync_dev.ops ORDER BY op_id"
        )

    def state(self) -> tuple[Any, ...]:
        return self.fetchall(
            "SELECT last_op_id, lsn::text, snapshot_done FROM powersync_dev.state"
        )[0]


@pytest.fixture
def source_db(pg: ServerInfo) -> Iterator[SourceDb]:
    name = f"devsync_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        # The fast cluster commits asynchronously; WAL then reaches logical decoding only
        # with the WAL writer's next round (up to 200 ms). Real deployments commit
        # synchronously, so measure with that.
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    db = SourceDb(pg, name, pg.conninfo(name), f"slot_{name}")
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        apply_declared_tables(conn)
    yield db
    drop_replication_slot(pg, db.slot_name)
    with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class RunningReplicator:
    replicator: Replicator
    db: SourceDb

    def wait_ready(self) -> None:
        wait_for(lambda: self.replicator.status.ready, 20, "replication ready")

    def sync(self) -> None:
        """Wait until everything committed so far in the source is in storage."""
        with psycopg.connect(self.db.conninfo, autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
            conn.execute("SELECT pg_logical_emit_message(false, 'powersync', 'ping')")

        def caught_up() -> bool:
            rows = self.db.fetchall("SELECT lsn >= %s::pg_lsn FROM powersync_dev.state", (target,))
            return bool(rows and rows[0][0])

        wait_for(caught_up, 20, "replication to catch up")

    def stop(self) -> None:
        self.replicator.stop()


@pytest.fixture
def start_replicator(source_db: SourceDb) -> Iterator[Callable[..., RunningReplicator]]:
    running: list[RunningReplicator] = []

    def start(rules: SyncConfig | None = None, **kwargs: Any) -> RunningReplicator:
        replicator = Replicator(
            source_db.conninfo,
            rules or parse_sync_config(BOOKS_CONFIG),
            slot_name=source_db.slot_name,
            **kwargs,
        )
        replicator.start()
        handle = RunningReplicator(replicator, source_db)
        running.append(handle)
        handle.wait_ready()
        return handle

    yield start
    for handle in running:
        handle.stop()


# -- JWT signing and JWKS -------------------------------------------------------------------


@dataclass
class Signer:
    """Signs RS256 tokens; its JWKS is served over HTTP so rotation can be tested."""

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    jwks_requests: int = 0

    def add_key(self) -> str:
        kid = f"k{len(self.keys) + 1}"
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
            keys.append(jwk)
        return {"keys": keys}

    def token(
        self,
        sub: str,
        *,
        expires_in: float = 3600,
        aud: str | None = AUDIENCE,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        kid = kid or next(iter(self.keys))
        now = time.time()
        payload: dict[str, Any] = {"sub": sub, "iat": int(now), "exp": now + expires_in}
        if aud is not None:
            payload["aud"] = aud
        payload.update(claims)
        return jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="session")
def signer_session() -> Signer:
    signer = Signer()
    signer.add_key()
    return signer


@pytest.fixture(scope="session")
def jwks_server(signer_session: Signer) -> Iterator[str]:
    signer = signer_session

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            signer.jwks_requests += 1
            body = json.dumps(signer.jwks()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


@pytest.fixture(scope="session")
def books_config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("devsync") / "books-sync-config.yaml"
    path.write_text(BOOKS_CONFIG)
    return path


@pytest.fixture
def start_service(
    source_db: SourceDb, jwks_server: str, books_config_path: Path
) -> Iterator[Callable[..., SyncServer]]:
    running: list[SyncServer] = []

    def start(**overrides: Any) -> SyncServer:
        values: dict[str, Any] = {
            "database_url": source_db.conninfo,
            "jwks_uri": jwks_server,
            "audiences": (AUDIENCE,),
            "sync_config_path": books_config_path,
            "slot_name": source_db.slot_name,
            "port": free_port(),
        }
        values.update(overrides)
        server = SyncServer(Settings(**values))
        running.append(server)
        return server.start()

    yield start
    for handle in running:
        handle.stop()
