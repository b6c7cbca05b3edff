"""The core extension's version is pinned to the one the pinned `@powersync/node` ships, the
build copies only those binaries, and a different core refuses to load."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

import papyrus.client._core as core
from papyrus.client import CoreExtensionError
from papyrus.client._core import CORE_VERSION, CoreConnection, locate_core_extension
from tests.conftest import ROOT

NODE_PACKAGE = ROOT / "node-sdk" / "node_modules" / "@powersync" / "node"


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("papyrus_setup", ROOT / "setup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pinned_version_is_the_one_the_pinned_node_package_ships() -> None:
    script = (NODE_PACKAGE / "download_core.js").read_text()
    assert re.search(r"^const version = '([^']+)';$", script, re.M).group(1) == CORE_VERSION


def test_a_core_of_another_version_refuses_to_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(core, "CORE_VERSION", "0.5.99")
    with pytest.raises(CoreExtensionError, match=r"is version 0\.5\.3/.*pinned to 0\.5\.99"):
        CoreConnection(tmp_path / "c.db", locate_core_extension())


def test_build_copies_the_pinned_binaries_after_checking_their_hashes(tmp_path: Path) -> None:
    copied = _setup_module().copy_core_extension(tmp_path / "_native")
    assert sorted(p.name for p in copied) == [
        "libpowersync_aarch64.linux.so",
        "libpowersync_aarch64.macos.dylib",
        "libpowersync_x64.linux.so",
        "libpowersync_x64.macos.dylib",
    ]
    for path in copied:
        assert path.read_bytes() == (NODE_PACKAGE / "lib" / path.name).read_bytes()


def _fake_node_package(root: Path, version: str, tamper: bool = False) -> Path:
    package = root / "node"
    (package / "lib").mkdir(parents=True)
    script = (NODE_PACKAGE / "download_core.js").read_text()
    (package / "download_core.js").write_text(
        script.replace(f"const version = '{CORE_VERSION}';", f"const version = '{version}';")
    )
    for lib in (NODE_PACKAGE / "lib").glob("libpowersync_*"):
        shutil.copy(lib, package / "lib" / lib.name)
    if tamper:
        with (package / "lib" / "libpowersync_x64.macos.dylib").open("ab") as f:
            f.write(b"\0")
    return package


@pytest.mark.parametrize(
    ("version", "tamper", "message"),
    [
        ("0.5.4", False, r"ships core 0\.5\.4, but the client is pinned to 0\.5\.3"),
        (CORE_VERSION, True, r"libpowersync_x64\.macos\.dylib does not have the SHA-256"),
    ],
    ids=["other-version", "tampered-binary"],
)
def test_build_refuses_a_mismatched_node_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, tamper: bool, message: str
) -> None:
    setup = _setup_module()
    monkeypatch.setattr(setup, "NODE_PACKAGE", _fake_node_package(tmp_path, version, tamper))
    with pytest.raises(setup.SetupError, match=message):
        setup.copy_core_extension(tmp_path / "_native")
    assert not (tmp_path / "_native" / "libpowersync_x64.macos.dylib").exists()


@pytest.mark.packaging
def test_building_without_the_node_package_fails_unless_told_to_leave_it_out(
    tmp_path: Path,
) -> None:
    """As in the server's Docker image, whose build context has no node-sdk/node_modules."""
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "d"), tmp_path]
    env = {k: v for k, v in os.environ.items() if k != "PAPYRUS_WITHOUT_CORE_EXTENSION"}
    result = subprocess.run(build, capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "The PowerSync core extension is not in" in result.stdout + result.stderr
    assert "make setup" in result.stdout + result.stderr

    env["PAPYRUS_WITHOUT_CORE_EXTENSION"] = "1"
    subprocess.run(build, check=True, capture_output=True, env=env)
    [wheel] = (tmp_path / "d").glob("papyrus-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "papyrus/server/app.py" in names
    assert not [n for n in names if "_native" in n]
