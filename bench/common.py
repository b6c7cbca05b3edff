"""What every benchmark script needs around the thing it measures (imported as `common`: the
scripts run as `python bench/<name>.py`, which puts this folder on the path)."""

from __future__ import annotations

import os
import socket
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(base_url: str, timeout: float = 60) -> None:
    """Until the API at `base_url` answers `/health/ready` (database up, migrations at head)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: a shared machine's numbers need them beside."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
