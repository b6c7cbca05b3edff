"""The `papyrus` command as a user runs it: real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import free_port

PAPYRUS = [sys.executable, "-m", "papyrus.cli.main"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATA_DIR")}
    env.update(extra)
    return env


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server never became ready")


def _postgres_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(proc: subprocess.Popen, sig: int) -> None:
    """Signals and waits; callers check `proc.returncode` afterwards (not here, in `finally`,
    where an assertion would hide the test's own failure)."""
    proc.send_signal(sig)
    proc.wait(timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_with_workers_on_embedded_database(tmp_path: Path, sig: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*PAPYRUS, "serve", "--port", str(port), "--data-dir", str(tmp_path), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=_env())
    try:
        _wait_ready(url, proc)
        register = httpx.post(
            f"{url}/v1/auth/register",
            json={
                "email": "persist@example.com",
                "password": "password-123",
                "display_name": "P",
                "client_type": "cli",
            },
        )
        assert register.status_code == 201
        token = register.json()["access_token"]
        # Any worker accepts a token issued by another: nothing lives in process memory.
        for _ in range(6):
            me = httpx.get(f"{url}/v1/users/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200
        assert _postgres_running(tmp_path)
    finally:
        _stop(proc, sig)
    assert proc.returncode == 0, f"serve exited with {proc.returncode} on {sig!r}"
    assert not _postgres_running(tmp_path), "the embedded database outlived the server"

    # The data survives a restart, here as a single process, which must stop cleanly too.
    proc = subprocess.Popen(
        [*PAPYRUS, "serve", "--port", str(port), "--data-dir", str(tmp_path)], env=_env()
    )
    try:
        _wait_ready(url, proc)
        login = httpx.post(
            f"{url}/v1/auth/login",
            json={"email": "persist@example.com", "password": "password-123", "client_type": "cli"},
        )
        assert login.status_code == 200
    finally:
        _stop(proc, sig)
    assert proc.returncode == 0, f"single-process serve exited with {proc.returncode} on {sig!r}"
    assert not _postgres_running(tmp_path), "the embedded database outlived the server"


def test_database_url_means_no_embedded_server(tmp_path: Path, pg_server, database_name) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(DATABASE_URL=pg_server.url(database_name))
    proc = subprocess.Popen(
        [*PAPYRUS, "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")], env=env
    )
    try:
        _wait_ready(url, proc)
        assert not (tmp_path / "d" / "postgres").exists()
    finally:
        _stop(proc, signal.SIGTERM)


def test_db_upgrade_applies_migrations(tmp_path: Path, pg_server) -> None:
    with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute('CREATE DATABASE "cli_upgrade"')
    env = _env(DATABASE_URL=pg_server.url("cli_upgrade"))
    subprocess.run([*PAPYRUS, "db", "upgrade"], env=env, check=True, timeout=60)
    with psycopg.connect(pg_server.conninfo("cli_upgrade")) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] >= 1
        assert conn.execute("SELECT to_regclass('users')").fetchone()[0] == "users"


def test_dev_runs_api_and_sync_service_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    port, sync_port = free_port(), free_port()
    url, sync_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sync_port}"
    proc = subprocess.Popen(
        [
            *PAPYRUS,
            "dev",
            "--port",
            str(port),
            "--sync-port",
            str(sync_port),
            "--data-dir",
            str(tmp_path),
        ],
        env=_env(),
        cwd=tmp_path,  # the sync config is found from the package, not the working directory
        start_new_session=True,
    )
    try:
        _wait_ready(url, proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{sync_url}/probes/readiness", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the sync service never became ready"
            time.sleep(0.2)
        # The sync service validates tokens against the API's JWKS.
        unauthenticated = httpx.post(f"{sync_url}/sync/stream", json={"buckets": []})
        assert unauthenticated.status_code == 401
        assert _postgres_running(tmp_path)
    finally:
        _stop(proc, signal.SIGINT)
    assert proc.returncode == 0, f"dev exited with {proc.returncode} on Ctrl-C"
    assert not _postgres_running(tmp_path)
    for dead in (url, sync_url):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{dead}/health", timeout=2)


@pytest.mark.parametrize("trusted", [False, True], ids=["default", "FORWARDED_ALLOW_IPS"])
def test_serve_believes_forwarding_only_from_configured_proxies(
    tmp_path: Path, pg_server, database_name, trusted: bool
) -> None:
    """uvicorn alone trusts X-Forwarded-For from 127.0.0.1; `serve` trusts nobody unless told."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(DATABASE_URL=pg_server.url(database_name), RATE_LIMIT_AUTH_IP_PER_MINUTE="3")
    if trusted:
        env["FORWARDED_ALLOW_IPS"] = "127.0.0.1"
    proc = subprocess.Popen(
        [*PAPYRUS, "serve", "--port", str(port), "--data-dir", str(tmp_path)], env=env
    )
    try:
        _wait_ready(url, proc)
        statuses = [
            httpx.post(
                f"{url}/v1/auth/refresh",
                json={"refresh_token": "nope"},
                headers={"X-Forwarded-For": f"198.18.0.{i}"},
            ).status_code
            for i in range(5)
        ]
    finally:
        _stop(proc, signal.SIGTERM)
    # Spoofed addresses from an untrusted peer all count against the peer; from a trusted
    # proxy each is its own client.
    assert statuses == ([401] * 5 if trusted else [401, 401, 401, 429, 429])
