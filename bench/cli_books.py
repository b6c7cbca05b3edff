"""`papyrus books list` over a large library: the whole command, as a user runs it.

    .venv/bin/python bench/cli_books.py [--books 20000] [--runs 5]

Fills a guest library in a temporary client directory, then times `papyrus books list` (the
first page, and a page deep in the list sorted by author) as separate processes, and the
query alone in-process. Prints medians; not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from papyrus.client import GUEST_SCHEMA, BookRepository, PowerSyncDatabase


def timed_command(env: dict[str, str], *args: str) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one `papyrus` process."""
    started = time.perf_counter()
    before = os.times()
    subprocess.run(
        [sys.executable, "-m", "papyrus.cli.main", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return time.perf_counter() - started, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--books", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="papyrus-bench-") as tmp:
        env = {**os.environ, "PAPYRUS_CLIENT_DIR": tmp, "PAPYRUS_TOKEN_STORE": "file"}
        with PowerSyncDatabase(Path(tmp) / "papyrus-guest.db", GUEST_SCHEMA) as db:
            db.execute_batch(
                "INSERT INTO books (id, title, author, rating) VALUES (uuid(), ?, ?, 3)",
                [(f"Book {i:06}", f"Author {i % 997}") for i in range(args.books)],
            )
            books = BookRepository(db)
            query = []
            for _ in range(args.runs):
                started = time.perf_counter()
                books.list(limit=50)
                books.count()
                query.append(time.perf_counter() - started)
        print(f"{args.books} books; load average {os.getloadavg()[0]:.1f}")
        print(f"  query (first page + count), in-process: {statistics.median(query) * 1000:.0f} ms")
        for label, cmd in (
            ("papyrus books list", ("books", "list")),
            (
                "papyrus books list --sort author --desc --offset 10000",
                ("books", "list", "--sort", "author", "--desc", "--offset", "10000"),
            ),
            ("papyrus --help (start-up alone)", ("--help",)),
        ):
            runs = [timed_command(env, *cmd) for _ in range(args.runs)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"  {label}: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU")


if __name__ == "__main__":
    main()
