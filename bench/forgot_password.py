"""Forgot-password latency for known and unknown addresses, over real HTTP.

    .venv/bin/python bench/forgot_password.py [--requests 2000] [--concurrency 1] [--rounds 2]

`POST /v1/auth/password/forgot` must answer "the same, in the same time" whether or not an
account uses the address (docs/account-lifecycle.md#forgotten-password). The test suite checks
that the answer and the work (the statements run, the tokens made) are the same; timing lives
here, as numbers, not in a test.

Starts an embedded PostgreSQL in a temporary directory (durable, as `papyrus dev` runs it),
migrates it, inserts `--requests / 2` accounts directly (no Argon2 at set-up), and runs `papyrus
serve` (one worker) against it with its mail going to a real SMTP catcher on loopback in this
process, so the sender delivers every reset mail as it would in production. Then, per round,
`--requests` forgot-password requests in a shuffled order, half for a known address and half
for an address no account uses, each address asked once (so both kinds also start a fresh
per-address mail counter), from `--concurrency` keep-alive connections. Interleaving puts both
kinds under the same load, including the mail deliveries the known ones set off after
answering.

Prints, per round and kind, n, mean, p50, p90, p99 and max in milliseconds, the difference of
the medians with a bootstrap 95% interval, and whether every answer had the same status and the
same bytes. The per-source and per-address limits are raised so that they never refuse. Not a
test: numbers vary with the machine's load (printed at the start and the end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from auth_endpoints import Connection
from common import free_port, load_average, wait_ready

from papyrus.embedded_db import EmbeddedPostgres
from papyrus.server import migrate
from papyrus.server.mail.catcher import MailCatcher

KINDS = ("known", "unknown")


@dataclass
class Samples:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    answers: set[tuple[int, str]] = field(default_factory=set)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def median_difference(known: list[float], unknown: list[float]) -> tuple[float, float, float]:
    """Median(known) - median(unknown) in ms, with a bootstrap 95% interval."""
    rng = random.Random(7)
    point = percentile(known, 0.5) - percentile(unknown, 0.5)
    diffs = sorted(
        percentile(rng.choices(known, k=len(known)), 0.5)
        - percentile(rng.choices(unknown, k=len(unknown)), 0.5)
        for _ in range(1000)
    )
    return point, diffs[25], diffs[974]


async def one_round(port: int, addresses: list[tuple[str, str]], concurrency: int) -> Samples:
    samples = Samples()
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in addresses:
        queue.put_nowait(item)

    async def worker() -> None:
        conn = Connection(port)
        try:
            while not queue.empty():
                kind, email = queue.get_nowait()
                began = time.perf_counter()
                status, body = await conn.request(
                    "POST", "/v1/auth/password/forgot", {"email": email}
                )
                samples.latencies[kind].append(time.perf_counter() - began)
                samples.answers.add((status, repr(body)))
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def report(name: str, samples: Samples) -> None:
    print(f"{name}")
    print(f"  {'':<8} {'n':>5} {'mean':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}   (ms)")
    for kind in KINDS:
        values = samples.latencies[kind]
        mean = 1000 * sum(values) / len(values)
        print(
            f"  {kind:<8} {len(values):>5} {mean:8.2f} {percentile(values, 0.5):8.2f}"
            f" {percentile(values, 0.9):8.2f} {percentile(values, 0.99):8.2f}"
            f" {1000 * max(values):8.2f}"
        )
    point, low, high = median_difference(*(samples.latencies[k] for k in KINDS))
    print(f"  p50 known - unknown: {point:+.2f} ms (95% interval {low:+.2f} to {high:+.2f})")
    same = "yes" if len(samples.answers) == 1 else f"NO: {sorted(samples.answers)}"
    print(f"  every answer the same status and bytes: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per round, half each kind")
    parser.add_argument("--concurrency", type=int, default=1, help="keep-alive connections")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--no-mail", action="store_true", help="no SMTP server: reset mails wait in the outbox"
    )
    args = parser.parse_args()
    half = args.requests // 2

    with tempfile.TemporaryDirectory(prefix="papyrus-bench-") as tmp, MailCatcher() as mailbox:
        data_dir = Path(tmp)
        database = EmbeddedPostgres(data_dir)
        info = database.start()
        load = load_average()
        try:
            url = info.url()
            migrate.upgrade(url)
            with psycopg.connect(info.conninfo()) as conn:
                conn.execute(
                    "INSERT INTO users (id, email, email_verified, password_hash, display_name)"
                    " SELECT gen_random_uuid(), 'known-' || r || '-' || n || '@example.com',"
                    " false, '$argon2id$v=19$m=65536,t=3,p=4$bench', 'Bench'"
                    " FROM generate_series(0, %s) r, generate_series(1, %s) n",
                    (args.rounds, half),
                )
            port = free_port()
            server = _serve(url, data_dir, port, None if args.no_mail else mailbox.port)
            try:
                wait_ready(f"http://127.0.0.1:{port}")
                rounds = [
                    asyncio.run(one_round(port, _addresses(r, half), args.concurrency))
                    for r in range(args.rounds + 1)  # round 0 warms up
                ]
                delivered = (
                    0 if args.no_mail else _wait_delivered(mailbox, (args.rounds + 1) * half)
                )
            finally:
                server.terminate()
                server.wait(timeout=30)
        finally:
            database.stop()

    print(
        f"{os.cpu_count()} cores, concurrency {args.concurrency}; "
        f"load before {load}, after {load_average()}"
    )
    for number, samples in enumerate(rounds[1:], start=1):
        report(f"round {number}: {args.requests} requests, shuffled", samples)
    print(f"reset mails delivered: {delivered} of {(args.rounds + 1) * half} known requests")


def _addresses(round_number: int, half: int) -> list[tuple[str, str]]:
    items = [("known", f"known-{round_number}-{n}@example.com") for n in range(1, half + 1)]
    items += [("unknown", f"nobody-{round_number}-{n}@example.com") for n in range(1, half + 1)]
    random.Random(round_number).shuffle(items)
    return items


def _serve(url: str, data_dir: Path, port: int, smtp_port: int | None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PAPYRUS_ENV": "development",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32),
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_AUTH_IP_PER_MINUTE": "100000000",
        "RATE_LIMIT_MAIL_PER_ADDRESS_PER_HOUR": "100000000",
    }
    if smtp_port is not None:
        env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_port), SMTP_SECURITY="none")
    command = [sys.executable, "-m", "papyrus.cli.main", "serve", "--no-migrate"]
    return subprocess.Popen([*command, "--port", str(port)], env=env, cwd=data_dir)


def _wait_delivered(mailbox: MailCatcher, expected: int) -> int:
    deadline = time.monotonic() + 120
    while len(mailbox.messages) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return len(mailbox.messages)


if __name__ == "__main__":
    main()
