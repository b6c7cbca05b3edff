"""Drives one official `@powersync/node` client (node-sdk/client.mjs) from a test."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NODE_SDK = Path(__file__).resolve().parents[2] / "node-sdk"


class NodeClient:
    def __init__(self, db_path: Path, api_url: str, sync_url: str, tokens: dict[str, Any]) -> None:
        self._ids = itertools.count(1)
        self.proc = subprocess.Popen(
            ["node", str(NODE_SDK / "client.mjs")],
            cwd=NODE_SDK,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.call(
            "open",
            path=str(db_path),
            api=api_url,
            sync=sync_url,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
        )

    def call(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin and self.proc.stdout
        request_id = next(self._ids)
        self.proc.stdin.write(json.dumps({"id": request_id, "cmd": cmd, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"node client exited ({self.proc.poll()}) during {cmd}")
        reply = json.loads(line)
        assert reply["id"] == request_id
        if not reply["ok"]:
            raise RuntimeError(f"{cmd} failed in node: {reply['error']}")
        return reply["result"]

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return self.call("getAll", sql=sql, params=list(params))

    def execute(self, sql: str, *params: Any) -> None:
        self.call("execute", sql=sql, params=list(params))

    def wait_until(
        self, check: Callable[[NodeClient], bool], timeout: float = 20, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"node client: timed out waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("close")
            finally:
                assert self.proc.stdin
                self.proc.stdin.close()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
