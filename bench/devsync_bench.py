"""Development sync service benchmark: the issue's three measurements against its targets.

    .venv/bin/python bench/devsync_bench.py [--books 100000] [--replication-rows 50000]
                                            [--writes 50]

Boots everything on loopback in a temporary directory: an embedded PostgreSQL (migrated), the
Papyrus API (uvicorn, in a thread of this process) and `papyrus sync-service` (its own process,
as deployed). Then, for one registered user:

1. Replication throughput: `--replication-rows` books inserted in ONE transaction directly in
   PostgreSQL; timed from the commit returning until a connected sync stream receives a
   checkpoint whose bucket count includes them (replicated, stored and servable). A second
   transaction tops the library up to `--books` and is timed the same way.
2. Initial sync: a fresh `@powersync/node` client (node-sdk/bench-initial-sync.mjs, its own
   process) connects and waits for its first complete sync of all `--books` books; seconds
   from connect() to first sync, the client's peak RSS and the sync service's peak RSS.
3. Commit-to-client latency: that client stays connected; the Node script POSTs `--writes`
   single-book uploads to the API's upload endpoint and times each from the 200 (the commit)
   until the book is in the client's local SQLite database. Timed inside Node, one clock.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from papyrus.embedded_db import EmbeddedPostgres
from papyrus.server import migrate
from papyrus.server.app import create_app
from papyrus.server.config import Settings
from papyrus.sync_config import sync_config_path

REPO = Path(__file__).resolve().parents[1]
NODE_SDK = REPO / "node-sdk"
NODE_SCRIPT = NODE_SDK / "bench-initial-sync.mjs"
SYNC_CONFIG = sync_config_path()
PASSWORD = "correct horse battery"

# Reference: PowerSync service 1.25 (Postgres storage) with @powersync/node, same machine class.
REFERENCE = {
    "replication": "≈7,600 ops/s",
    "initial": "≈8 s",
    "initial_rate": "≈12,000 ops/s",
    "client_rss": "≈240 MB",
    "service_rss": "≈340 MB",
    "p50": "≈20 ms",
    "p95": "≤25 ms",
}
TARGET_REPLICATION_OPS = 5_000
TARGET_INITIAL_SECONDS = 10.0  # for 100,000 books
TARGET_P50_MS = 50.0
TARGET_P95_MS = 150.0

# Realistic rows: every column the app uses, within the table's check constraints.
INSERT_BOOKS = """
INSERT INTO books (id, owner_user_id, title, subtitle, author, co_authors, isbn13, publisher,
                   language, page_count, description, reading_status, current_page,
                   current_position, is_favorite, rating, custom_metadata)
SELECT gen_random_uuid(), %(owner)s, 'Title ' || (%(offset)s + i), 'A subtitle',
       'Author ' || (i %% 97), '["Co Author A", "Co Author B"]'::jsonb,
       lpad((%(offset)s + i)::text, 13, '9'), 'Publisher', 'en', 300 + i %% 500,
       repeat('Lorem ipsum dolor sit amet. ', 8),
       (ARRAY['not_started', 'reading', 'finished', 'abandoned'])[1 + i %% 4], i %% 300,
       (i %% 1000) / 1000.0, i %% 7 = 0, 1 + i %% 5, '{"shelf": "main"}'::jsonb
FROM generate_series(1, %(count)s) AS i
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_api(settings: Settings, port: int) -> uvicorn.Server:
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    return server


def start_sync_service(
    database_url: str, api: str, audience: str, port: int, log: Path
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["LOG_LEVEL"] = "WARNING"
    out = log.open("ab")  # its access log would drown the report; shown on failure
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "papyrus.cli.main",
            "sync-service",
            "--database-url",
            database_url,
            "--jwks-uri",
            f"{api}/v1/auth/jwks",
            "--audience",
            audience,
            "--sync-config",
            str(SYNC_CONFIG),
            "--port",
            str(port),
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the sync service exited during start-up ({proc.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/probes/readiness", timeout=1).is_success:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the sync service never became ready")


def stop_process(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- memory of another process ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(pgdata: Path) -> dict[int, float]:
    """CPU seconds so far of the postmaster and each of its live children, by pid."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    result = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        if pid == postmaster or int(fields[1]) == postmaster:
            result[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return result


def proc_status_kb(pid: int, field_name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRss:
    """Peak RSS of a process from now on: its kernel high-water mark (VmHWM), reset at start
    through /proc/<pid>/clear_refs where allowed, and a 50 ms VmRSS sampler as a floor."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start_kb = proc_status_kb(pid, "VmRSS") or 0
        self.sampled_kb = self.start_kb
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            rss = proc_status_kb(self.pid, "VmRSS")
            if rss is not None:
                self.sampled_kb = max(self.sampled_kb, rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        peak = self.sampled_kb
        if self.hwm_reset:
            peak = max(peak, proc_status_kb(self.pid, "VmHWM") or 0)
        return peak


# -- a sync stream that watches checkpoints -----------------------------------------------------


@dataclass
class CheckpointWatcher:
    """One `/sync/stream` connection; records (arrival time, total bucket count) for every
    checkpoint line. Data lines are read (the stream must flow) but not parsed."""

    url: str
    token: str
    counts: dict[str, int] = field(default_factory=dict)
    events: list[tuple[float, int]] = field(default_factory=list)
    completes: list[float] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._closing = False
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        body = {"buckets": [], "raw_data": True, "client_id": "bench-watcher"}
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
                client.stream(
                    "POST",
                    f"{self.url}/sync/stream",
                    json=body,
                    headers={"Authorization": f"Token {self.token}"},
                ) as response,
            ):
                response.raise_for_status()
                self._response = response
                for line in response.iter_lines():
                    now = time.perf_counter()
                    if not line or line.startswith('{"data"'):
                        continue
                    parsed = json.loads(line)
                    with self._cond:
                        if "checkpoint" in parsed:
                            self.counts = {
                                b["bucket"]: b["count"] for b in parsed["checkpoint"]["buckets"]
                            }
                        elif "checkpoint_diff" in parsed:
                            diff = parsed["checkpoint_diff"]
                            for b in diff["updated_buckets"]:
                                self.counts[b["bucket"]] = b["count"]
                            for name in diff["removed_buckets"]:
                                self.counts.pop(name, None)
                        elif "checkpoint_complete" in parsed:
                            self.completes.append(now)
                            self._cond.notify_all()
                            continue
                        else:
                            continue
                        self.events.append((now, sum(self.counts.values())))
                        self._cond.notify_all()
        except BaseException as exc:  # reported to the waiting thread
            if not self._closing:
                self.error = exc
        finally:
            with self._cond:
                self._cond.notify_all()

    def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                if self.error is not None:
                    raise RuntimeError(f"sync stream failed: {self.error!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out waiting for {what}")
                self._cond.wait(min(left, 0.5))

    def total(self) -> int:
        return self.events[-1][1] if self.events else -1

    def close(self) -> None:
        self._closing = True
        if self._response is not None:
            self._response.close()
        self._thread.join(5)


def replicate(conninfo: str, owner: str, offset: int, count: int, watcher: CheckpointWatcher):
    """Insert `count` books in one transaction; (insert seconds, commit -> checkpoint seconds)."""
    watcher.wait(lambda: watcher.events, 30, "the first checkpoint")
    target = watcher.total() + count
    with psycopg.connect(conninfo) as conn:  # one transaction, committed on leaving the block
        started = time.perf_counter()
        conn.execute(INSERT_BOOKS, {"owner": owner, "offset": offset, "count": count})
    committed = time.perf_counter()
    at = watcher.wait(
        lambda: next((t for t, total in watcher.events if total >= target), None),
        600,
        f"a checkpoint with {target:,} ops",
    )
    # Let the stream finish downloading this checkpoint before anything else is measured.
    watcher.wait(lambda: any(t >= at for t in watcher.completes), 600, "checkpoint_complete")
    return committed - started, at - committed


# -- the run ------------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def check(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", type=int, default=100_000, help="books for the initial sync")
    parser.add_argument("--replication-rows", type=int, default=50_000, help="rows in one commit")
    parser.add_argument("--writes", type=int, default=50, help="latency samples (>= 50)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if shutil.which("node") is None or not (NODE_SDK / "node_modules" / "@powersync").is_dir():
        print("the Node SDK is not installed: run `make setup` (npm ci in node-sdk/)")
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="papyrus-devsync-bench-"))
    pg = EmbeddedPostgres(tmp / "pg", fast=True)
    api_server: uvicorn.Server | None = None
    sync_proc: subprocess.Popen | None = None
    node: subprocess.Popen | None = None
    watcher: CheckpointWatcher | None = None
    sync_log = tmp / "sync-service.log"
    t_run = time.perf_counter()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at start {load} on {os.cpu_count()} CPUs")
    ok = False
    try:
        info = pg.start()
        with psycopg.connect(info.conninfo("postgres"), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "bench"')
        migrate.upgrade(info.url("bench"))
        conninfo = info.conninfo("bench")

        settings = Settings(
            _env_file=None,
            PAPYRUS_ENV="test",
            DATA_DIR=tmp / "data",
            DATABASE_URL=info.url("bench"),
            ACCESS_TOKEN_SECRET=secrets.token_urlsafe(32),
            RATE_LIMIT_AUTH_IP_PER_MINUTE=100_000,
            POWERSYNC_TOKEN_TTL_SECONDS=3600,
        )
        api_port, sync_port = free_port(), free_port()
        api_server = serve_api(settings, api_port)
        api = f"http://127.0.0.1:{api_port}"
        sync = f"http://127.0.0.1:{sync_port}"
        sync_proc = start_sync_service(
            info.url("bench"), api, settings.POWERSYNC_JWT_AUDIENCE, sync_port, sync_log
        )

        response = httpx.post(
            f"{api}/v1/auth/register",
            json={
                "email": "bench@example.com",
                "password": PASSWORD,
                "display_name": "Bench",
                "client_type": "cli",
            },
        )
        response.raise_for_status()
        tokens = response.json()
        owner = tokens["user"]["id"]
        ps_token = httpx.post(
            f"{api}/v1/auth/powersync-token",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        ).json()["token"]
        print(
            f"stack ready in {time.perf_counter() - t_run:.1f} s (sync service pid {sync_proc.pid})"
        )

        # 1. replication throughput -----------------------------------------------------------
        rows = args.replication_rows
        top_up = max(0, args.books - rows)
        total_books = rows + top_up
        watcher = CheckpointWatcher(sync, ps_token)
        insert_s, rep_s = replicate(conninfo, owner, 0, rows, watcher)
        print(
            f"replication: {rows:,} rows inserted in {insert_s:.2f} s; commit -> checkpoint"
            f" {rep_s:.2f} s = {rows / rep_s:,.0f} ops/s"
        )
        rep2 = None
        if top_up:
            insert2_s, rep2_s = replicate(conninfo, owner, rows, top_up, watcher)
            rep2 = (top_up, rep2_s)
            print(
                f"replication: {top_up:,} rows inserted in {insert2_s:.2f} s; commit -> checkpoint"
                f" {rep2_s:.2f} s = {top_up / rep2_s:,.0f} ops/s"
            )
        watcher.close()
        watcher = None
        time.sleep(1)  # let the service settle (the stream above is gone)

        # 2. initial sync (+ 3. latency, same fresh client) -----------------------------------
        login = httpx.post(
            f"{api}/v1/auth/login",
            json={"email": "bench@example.com", "password": PASSWORD, "client_type": "cli"},
        )
        login.raise_for_status()
        node_tokens = login.json()
        options = {
            "path": str(tmp / "node-bench.db"),
            "api": api,
            "sync": sync,
            "access_token": node_tokens["access_token"],
            "refresh_token": node_tokens["refresh_token"],
            "expected": total_books,
            "writes": args.writes,
            "warmup": 3,
        }
        service_rss = PeakRss(sync_proc.pid)
        service_cpu = cpu_seconds(sync_proc.pid)
        pg_cpu = postgres_cpu_seconds(pg.pgdata)
        spawned = time.perf_counter()
        node = subprocess.Popen(
            ["node", str(NODE_SCRIPT), json.dumps(options)],
            cwd=NODE_SDK,
            stdout=subprocess.PIPE,
            text=True,
        )
        results: dict[str, Any] = {}
        service_peak_kb = None
        assert node.stdout is not None
        for line in node.stdout:
            message = json.loads(line)
            results[message["event"]] = message
            if message["event"] == "first_sync":
                service_peak_kb = service_rss.stop()
                service_cpu = cpu_seconds(sync_proc.pid) - service_cpu
                pg_cpu = sum(
                    t - pg_cpu.get(pid, 0.0) for pid, t in postgres_cpu_seconds(pg.pgdata).items()
                )
                print(
                    f"initial sync: {message['rows']:,} books in {message['seconds']:.2f} s"
                    f" from connect() ({time.perf_counter() - spawned:.2f} s from process start)"
                )
                print(
                    f"  CPU seconds meanwhile: Node client {message['cpu_seconds']:.2f},"
                    f" sync service {service_cpu:.2f}, PostgreSQL {pg_cpu:.2f}"
                )
            elif message["event"] == "error":
                raise RuntimeError(f"node: {message['error']}")
        node.wait(30)
        if service_peak_kb is None:
            service_rss.stop()
            raise RuntimeError(f"the Node client exited ({node.returncode}) before first sync")
        if "latency" not in results:
            raise RuntimeError(f"the Node client exited ({node.returncode}) without latencies")

        # -- report ----------------------------------------------------------------------------
        first = results["first_sync"]
        initial_s = first["seconds"]
        from_commit = results["latency"]["from_commit_ms"]
        from_request = results["latency"]["from_request_ms"]
        p50, p95 = statistics.median(from_commit), percentile(from_commit, 0.95)
        rep_ops = rows / rep_s
        rep_worst = min(rep_ops, rep2[0] / rep2[1]) if rep2 else rep_ops
        # The target is for 100,000 books; scale it if another size was asked for.
        initial_target = TARGET_INITIAL_SECONDS * total_books / 100_000

        table: list[tuple[str, str, str, str, str]] = [
            (
                f"replication, one {rows:,}-row transaction",
                f"{rep_s:.2f} s = {rep_ops:,.0f} ops/s",
                f">= {TARGET_REPLICATION_OPS:,} ops/s",
                check(rep_ops >= TARGET_REPLICATION_OPS),
                REFERENCE["replication"],
            )
        ]
        if rep2:
            table.append(
                (
                    f"replication, one {rep2[0]:,}-row transaction",
                    f"{rep2[1]:.2f} s = {rep2[0] / rep2[1]:,.0f} ops/s",
                    f">= {TARGET_REPLICATION_OPS:,} ops/s",
                    check(rep2[0] / rep2[1] >= TARGET_REPLICATION_OPS),
                    REFERENCE["replication"],
                )
            )
        table += [
            (
                f"initial sync of {total_books:,} books",
                f"{initial_s:.2f} s",
                f"<= {initial_target:g} s",
                check(initial_s <= initial_target),
                REFERENCE["initial"],
            ),
            (
                "  initial sync rate",
                f"{total_books / initial_s:,.0f} ops/s",
                "",
                "",
                REFERENCE["initial_rate"],
            ),
            ("  client peak RSS", f"{first['max_rss_kb'] / 1024:,.0f} MB", "", "", "≈240 MB"),
            (
                "  sync service peak RSS",
                f"{service_peak_kb / 1024:,.0f} MB (from {service_rss.start_kb / 1024:,.0f})",
                "",
                "",
                REFERENCE["service_rss"],
            ),
            (
                f"commit -> client latency p50 ({len(from_commit)} writes)",
                f"{p50:.1f} ms",
                f"<= {TARGET_P50_MS:g} ms",
                check(p50 <= TARGET_P50_MS),
                REFERENCE["p50"],
            ),
            (
                f"commit -> client latency p95 ({len(from_commit)} writes)",
                f"{p95:.1f} ms",
                f"<= {TARGET_P95_MS:g} ms",
                check(p95 <= TARGET_P95_MS),
                REFERENCE["p95"],
            ),
            (
                "  request -> client p50 / p95 (incl. upload)",
                f"{statistics.median(from_request):.1f} / {percentile(from_request, 0.95):.1f} ms",
                "",
                "",
                "",
            ),
            (
                "  commit -> client min / max",
                f"{min(from_commit):.1f} / {max(from_commit):.1f} ms",
                "",
                "",
                "",
            ),
        ]
        header = ("measurement", "result", "target", "", "PowerSync 1.25")
        widths = [max(len(row[i]) for row in [header, *table]) for i in range(5)]
        print()
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        print("  ".join("-" * w for w in widths))
        for row in table:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if not service_rss.hwm_reset:
            print("(service peak RSS: sampled every 50 ms; its high-water mark could not be reset)")
        print(f"\ntotal run time {time.perf_counter() - t_run:.0f} s; load average now", end=" ")
        print(" ".join(f"{x:.2f}" for x in os.getloadavg()), f"on {os.cpu_count()} CPUs")
        passed = (
            rep_worst >= TARGET_REPLICATION_OPS
            and initial_s <= initial_target
            and p50 <= TARGET_P50_MS
            and p95 <= TARGET_P95_MS
        )
        print("all targets met" if passed else "SOME TARGETS MISSED")
        ok = True
        return 0 if passed else 1
    finally:
        if watcher is not None:
            watcher.close()
        if node is not None and node.poll() is None:
            node.kill()
            node.wait()
        stop_process(sync_proc)
        if api_server is not None:
            api_server.should_exit = True
            time.sleep(0.5)
        pg.stop()
        if not ok and sync_log.exists():
            tail = sync_log.read_text(errors="replace").splitlines()[-30:]
            print("sync service log (last lines):", *tail, sep="\n  ")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
