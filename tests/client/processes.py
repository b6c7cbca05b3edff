"""`papyrus` commands in processes of their own, as a user's terminals run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Papyrus:
    """One `papyrus` command in its own process, its output collected as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "papyrus.cli.main", *args],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def finish(self, timeout: float = 90) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def interrupt(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.finish(30)


def papyrus(env: dict[str, str], *args: str, code: int = 0) -> str:
    """Runs one command to completion in its own process; returns its stdout."""
    proc = Papyrus(env, *args)
    assert proc.finish() == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


class Refresher:
    """A process that refreshes the device's stored session `rounds` times in a row, once told
    to start (`tests/client/refresher.py`), so that several start at the same instant."""

    def __init__(self, env: dict[str, str], rounds: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.client.refresher", str(rounds)],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", (line, self.proc.stderr and self.proc.stderr.read())

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err
