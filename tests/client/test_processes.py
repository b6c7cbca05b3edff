"""Several processes on one device: real `papyrus` processes sharing one client directory,
against the whole stack (the API and the development sync service)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from papyrus.cli.main import app
from papyrus.client._interprocess import StatusFile
from tests.client.conftest import eventually
from tests.client.processes import Papyrus, papyrus
from tests.client.stack import Stack

PASSWORD = "correct horse battery"


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> Iterator[dict[str, str]]:
    values = {
        "PAPYRUS_CLIENT_DIR": str(tmp_path / "device"),
        "PAPYRUS_TOKEN_STORE": "file",
        "PAPYRUS_API_URL": stack.api_url,
        "POWERSYNC_SERVICE_URL": stack.sync_url,
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(
        app,
        ["register", "--email", "ada@example.com", "--name", "Ada"],
        env=values,
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    yield values


@pytest.fixture
def streams(stack: Stack) -> list[dict[str, Any]]:
    """The body of every sync stream the development sync service opens from now on."""
    assert stack.sync is not None
    service = stack.sync.service
    opened: list[dict[str, Any]] = []
    session = service.session

    def counting(token: Any, body: dict[str, Any]) -> Any:
        opened.append(body)
        return session(token, body)

    service.session = counting  # type: ignore[method-assign]
    return opened


def owner_status(env: dict[str, str]) -> tuple[int, Any] | None:
    return StatusFile(str(Path(env["PAPYRUS_CLIENT_DIR"]) / "papyrus-account.db")).read()


def synced_by(env: dict[str, str], pid: int) -> bool:
    published = owner_status(env)
    return published is not None and published[0] == pid and published[1].has_synced


def test_a_watching_process_sees_and_uploads_another_process_writes(
    stack: Stack, env: dict[str, str], streams: list[dict[str, Any]]
) -> None:
    watcher = Papyrus(env, "books", "watch")
    try:
        eventually(lambda: "Title" in watcher.stdout, timeout=60)
        eventually(lambda: synced_by(env, watcher.pid) and len(streams) == 1, timeout=60)

        out = papyrus(env, "books", "add", "Written elsewhere")
        assert f"process {watcher.pid} is syncing them" in out
        eventually(lambda: "Written elsewhere" in watcher.stdout, 30)  # the watch saw it
        eventually(lambda: stack.sql("SELECT title FROM books") == [("Written elsewhere",)], 30)

        papyrus(env, "books", "add", "Then synced")
        out = papyrus(env, "sync", "now", "--timeout", "60")
        assert f"Another process (pid {watcher.pid}) is syncing" in out and "Synced." in out
        # `sync now` returned after the owner uploaded the write and applied it back.
        assert ("Then synced",) in stack.sql("SELECT title FROM books")
        assert "Synced by" in papyrus(env, "sync", "status")
        assert len(streams) == 1  # the other processes never opened a stream of their own
        published = owner_status(env)
        assert published is not None and published[1].last_error is None
    finally:
        assert watcher.interrupt() == 0, watcher.stderr
    assert "checksum" not in watcher.stderr.lower() and "Traceback" not in watcher.stderr


def test_two_syncing_processes_run_one_sync_loop_and_the_second_takes_over(
    stack: Stack, env: dict[str, str], streams: list[dict[str, Any]]
) -> None:
    first = Papyrus(env, "books", "watch")
    second: Papyrus | None = None
    try:
        eventually(lambda: synced_by(env, first.pid), timeout=60)
        second = Papyrus(env, "books", "watch")
        eventually(lambda: f"Another process (pid {first.pid})" in second.stderr, timeout=60)
        assert len(streams) == 1

        papyrus(env, "books", "add", "Seen by both")
        eventually(lambda: "Seen by both" in first.stdout and "Seen by both" in second.stdout, 30)
        eventually(lambda: stack.sql("SELECT title FROM books") == [("Seen by both",)], 30)
        assert len(streams) == 1

        assert first.interrupt() == 0, first.stderr
        eventually(lambda: synced_by(env, second.pid) and len(streams) == 2, timeout=30)
        papyrus(env, "books", "add", "After the take-over")
        eventually(lambda: ("After the take-over",) in stack.sql("SELECT title FROM books"), 30)
        eventually(lambda: "After the take-over" in second.stdout, 30)
        published = owner_status(env)
        assert published is not None and published[1].last_error is None
    finally:
        first.interrupt()
        if second is not None:
            assert second.interrupt() == 0, second.stderr
    for proc in (first, second):
        assert "checksum" not in proc.stderr.lower() and "Traceback" not in proc.stderr
