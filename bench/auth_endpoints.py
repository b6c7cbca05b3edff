"""Hot auth endpoints over real HTTP: login, refresh, powersync-token, refresh during a login storm.

    .venv/bin/python bench/auth_endpoints.py [--seconds 5] [--concurrency 16] [--workers 1]

Starts an embedded PostgreSQL in a temporary directory (the configuration `papyrus dev` uses,
durable), migrates it and runs `papyrus serve` (one worker by default) against it in a child
process. The load comes from this process: `--concurrency` asyncio tasks, each on its own
keep-alive connection, with a minimal HTTP/1.1 client (a general-purpose client would spend
more CPU than the server on this 2-core machine and measure itself). The limits stay on: the
per-IP limit is raised so it never refuses, but every request is still counted in PostgreSQL.

Phases, each `--seconds` long, after one second of warm-up:

1. login: `--concurrency` clients signing in with the right password (Argon2 bound);
2. refresh: `--concurrency` clients, each rotating its own refresh token chain;
3. powersync-token: `--concurrency` clients with access tokens;
4. refresh during a login storm: the refresh load of phase 2 again while `--concurrency` other
   clients sign in as fast as they can.

Prints req/s, p50 and p99 for each, and the CPU time the server process and the PostgreSQL
cluster spent per request (from /proc; unlike req/s, barely moved by other load on the machine),
then checks the targets (refresh >= 600 req/s, powersync-token >= 1,000 req/s, refresh p99 in the
storm <= 3x its p99 in phase 2). Exit status 0 when every target is met, 1 otherwise. Not a test:
numbers vary with the machine's load (printed at the start and the end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import free_port, load_average, wait_ready

from papyrus.embedded_db import EmbeddedPostgres
from papyrus.server import migrate

PASSWORD = "benchmark-password"
TARGET_REFRESH_RPS = 600
TARGET_POWERSYNC_RPS = 1000
TARGET_STORM_P99_RATIO = 3.0


class Connection:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for uvicorn's JSON answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: dict | None = None, token: str | None = None
    ) -> tuple[int, dict | None]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(payload)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        self.writer.write(head.encode() + b"\r\n" + payload)
        assert self.reader is not None
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, json.loads(data) if data else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    server_cpu: float = 0.0
    database_cpu: float = 0.0

    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    def line(self) -> str:
        errors = f"  errors {self.errors}" if self.errors else ""
        n = max(1, len(self.latencies))
        cpu = (
            f"   cpu/req server {1000 * self.server_cpu / n:5.2f} ms"
            f" db {1000 * self.database_cpu / n:5.2f} ms"
            if self.server_cpu
            else ""
        )
        return (
            f"{self.name:<34} {self.rate():8.0f} req/s   p50 {self.percentile(0.5):7.1f} ms"
            f"   p99 {self.percentile(0.99):7.1f} ms{cpu}   (n={len(self.latencies)}){errors}"
        )


Step = Callable[[Connection], Awaitable[int]]


@dataclass
class Processes:
    """The server process and the PostgreSQL cluster, for CPU accounting."""

    server_pid: int
    postmaster_pid: int

    def server_cpu(self) -> float:
        return _cpu_seconds(self.server_pid)

    def database_cpu(self) -> float:
        total = _cpu_seconds(self.postmaster_pid)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.postmaster_pid:
                        total += _cpu_seconds(int(entry))
                except (OSError, ValueError, IndexError):
                    pass  # gone meanwhile
        return total


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_clients(
    port: int,
    steps: list[Step],
    seconds: float,
    phase: Phase | None,
    warmup: float = 1.0,
    processes: Processes | None = None,
) -> None:
    """Each step function runs in its own loop on its own connection until the time is up;
    only requests that start after the warm-up and end before the deadline are recorded."""
    start = time.perf_counter()
    measure_from = start + warmup
    deadline = measure_from + seconds

    async def account() -> None:
        if processes is None or phase is None:
            return
        await asyncio.sleep(measure_from - time.perf_counter())
        server, database = processes.server_cpu(), processes.database_cpu()
        await asyncio.sleep(deadline - time.perf_counter())
        phase.server_cpu = processes.server_cpu() - server
        phase.database_cpu = processes.database_cpu() - database

    async def loop(step: Step) -> None:
        conn = Connection(port)
        try:
            while True:
                began = time.perf_counter()
                if began >= deadline:
                    return
                status = await step(conn)
                ended = time.perf_counter()
                if phase is None or began < measure_from or ended > deadline:
                    continue
                if status >= 400:
                    phase.errors[status] = phase.errors.get(status, 0) + 1
                else:
                    phase.latencies.append(ended - began)
        finally:
            conn.close()

    await asyncio.gather(account(), *(loop(step) for step in steps))
    if phase is not None:
        phase.elapsed = seconds


def login_step(email: str) -> Step:
    body = {"email": email, "password": PASSWORD, "client_type": "cli"}

    async def step(conn: Connection) -> int:
        status, _ = await conn.request("POST", "/v1/auth/login", body)
        return status

    return step


def refresh_step(refresh_token: str) -> Step:
    state = {"token": refresh_token}

    async def step(conn: Connection) -> int:
        status, data = await conn.request(
            "POST", "/v1/auth/refresh", {"refresh_token": state["token"]}
        )
        if status != 200 or data is None:
            raise SystemExit(f"refresh failed: {status} {data}")
        state["token"] = data["refresh_token"]
        return status

    return step


def powersync_step(access_token: str) -> Step:
    async def step(conn: Connection) -> int:
        status, _ = await conn.request("POST", "/v1/auth/powersync-token", token=access_token)
        return status

    return step


async def bench(port: int, args: argparse.Namespace, procs: Processes) -> list[Phase]:
    n = args.concurrency
    emails = [f"bench-{i}@example.com" for i in range(2 * n)]
    conn = Connection(port)
    accounts = []
    for email in emails:
        status, data = await conn.request(
            "POST",
            "/v1/auth/register",
            {"email": email, "password": PASSWORD, "display_name": "Bench", "client_type": "cli"},
        )
        if status != 201 or data is None:
            raise SystemExit(f"register failed: {status} {data}")
        accounts.append(data)
    conn.close()
    refreshers = [refresh_step(a["refresh_token"]) for a in accounts[:n]]
    login_clients = [login_step(email) for email in emails[n:]]

    login = Phase("login")
    await run_clients(port, [login_step(e) for e in emails[:n]], args.seconds, login, 1, procs)
    refresh = Phase("refresh")
    await run_clients(port, refreshers, args.seconds, refresh, 1, procs)
    powersync = Phase("powersync-token")
    tokens = [powersync_step(a["access_token"]) for a in accounts[:n]]
    await run_clients(port, tokens, args.seconds, powersync, 1, procs)
    storm = Phase(f"refresh during {n}-way login storm")
    storm_logins = Phase("  (logins in the storm)")
    await asyncio.gather(
        run_clients(port, refreshers, args.seconds, storm),
        run_clients(port, login_clients, args.seconds, storm_logins),
    )
    return [login, refresh, powersync, storm, storm_logins]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="papyrus-bench-") as tmp:
        data_dir = Path(tmp)
        database = EmbeddedPostgres(data_dir)
        info = database.start()
        load = load_average()
        try:
            url = info.url()
            migrate.upgrade(url)
            postmaster = int((database.pgdata / "postmaster.pid").read_text().split()[0])
            phases = _with_server(url, data_dir, args, postmaster)
        finally:
            database.stop()

    after = load_average()
    print(f"{os.cpu_count()} cores, {args.workers} worker(s); load before {load}, after {after}")
    for phase in phases:
        print(phase.line())
    _, refresh, powersync, storm, _ = phases
    ratio = storm.percentile(0.99) / refresh.percentile(0.99)
    checks = [
        (f"refresh >= {TARGET_REFRESH_RPS} req/s", refresh.rate() >= TARGET_REFRESH_RPS),
        (
            f"powersync-token >= {TARGET_POWERSYNC_RPS} req/s",
            powersync.rate() >= TARGET_POWERSYNC_RPS,
        ),
        (
            f"refresh p99 in the storm <= {TARGET_STORM_P99_RATIO:g}x idle (is {ratio:.2f}x)",
            ratio <= TARGET_STORM_P99_RATIO,
        ),
    ]
    for label, ok in checks:
        print(f"{'met ' if ok else 'MISSED'}  {label}")
    sys.exit(0 if all(ok for _, ok in checks) else 1)


def _with_server(
    url: str, data_dir: Path, args: argparse.Namespace, postmaster: int
) -> list[Phase]:
    port = free_port()
    env = {
        **os.environ,
        "PAPYRUS_ENV": "development",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32),
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_AUTH_IP_PER_MINUTE": "100000000",
    }
    command = [sys.executable, "-m", "papyrus.cli.main", "serve", "--no-migrate"]
    command += ["--port", str(port), "--workers", str(args.workers)]
    server = subprocess.Popen(command, env=env, cwd=data_dir)
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        return asyncio.run(bench(port, args, Processes(server.pid, postmaster)))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
