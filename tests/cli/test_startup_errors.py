"""`papyrus serve` and `papyrus dev` refuse a busy port or a bad setting with one line and
exit code 1, never a traceback (real processes)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

PAPYRUS = [sys.executable, "-m", "papyrus.cli.main"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO ")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def papyrus(
    tmp_path: Path, *args: str, data_dir: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATA_DIR")}
    return subprocess.run(
        [*PAPYRUS, *args, "--data-dir", str(data_dir or tmp_path / "data")],
        env={**clean, **env},
        cwd=tmp_path,  # no .env file here
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The one line that explains the failure (besides the usual INFO log lines)."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if not LOG_LINE.match(line)]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_busy_port_is_one_line(tmp_path: Path, busy_port: int) -> None:
    line = one_line_error(papyrus(tmp_path, "serve", "--port", str(busy_port)))
    assert line.startswith("papyrus serve:") and f"port {busy_port}" in line
    assert "already in use" in line and "--port" in line
    assert not (tmp_path / "data" / "postgres").exists()  # refused before starting anything

    dev = ("dev", "--port", str(free_port()), "--sync-port", str(busy_port))
    line = one_line_error(papyrus(tmp_path, *dev))
    assert line.startswith("papyrus dev:") and "already in use" in line and "--sync-port" in line


def test_a_bad_setting_is_one_line(tmp_path: Path) -> None:
    port = str(free_port())
    bad = papyrus(tmp_path, "serve", "--port", port, ACCESS_TOKEN_TTL_SECONDS="fifteen")
    line = one_line_error(bad)
    assert line.startswith("papyrus serve: invalid configuration: ACCESS_TOKEN_TTL_SECONDS:")

    production = papyrus(
        tmp_path, "dev", "--port", port, "--sync-port", str(free_port()), PAPYRUS_ENV="production"
    )
    line = one_line_error(production)
    assert line.startswith("papyrus dev: invalid configuration:") and "ACCESS_TOKEN_SECRET" in line

    unreachable = "postgresql://papyrus:x@127.0.0.1:1/papyrus"
    line = one_line_error(papyrus(tmp_path, "serve", "--port", port, DATABASE_URL=unreachable))
    assert line.startswith("papyrus serve: cannot use the database:")

    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    line = one_line_error(papyrus(tmp_path, "serve", "--port", port, data_dir=a_file / "data"))
    assert line.startswith("papyrus serve: cannot use") and "Not a directory" in line
