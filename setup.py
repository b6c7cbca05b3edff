"""Build hook: the wheel carries the PowerSync core extension.

The binaries come from the pinned `@powersync/node` package (node-sdk/, installed by
`make setup`), so `pip install papyrus` needs neither Node nor npm. The build checks that the
package ships the core version the client is pinned to (`CORE_VERSION` in
src/papyrus/client/_core.py) and that every binary has the SHA-256 the package lists for it.

`PAPYRUS_WITHOUT_CORE_EXTENSION=1` builds without them, for images that run only the server.
Editable installs skip the copy: the client then loads the binaries from node-sdk/ directly.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
NODE_PACKAGE = ROOT / "node-sdk" / "node_modules" / "@powersync" / "node"
# linux x64/aarch64 and macOS x64/aarch64: the platforms `_core._binary_name()` knows.
BINARIES = (
    "libpowersync_x64.linux.so",
    "libpowersync_aarch64.linux.so",
    "libpowersync_x64.macos.dylib",
    "libpowersync_aarch64.macos.dylib",
)
TARGET = Path("papyrus") / "client" / "_native"


def _pinned_core_version() -> str:
    source = (ROOT / "src" / "papyrus" / "client" / "_core.py").read_text()
    match = re.search(r'^CORE_VERSION = "([^"]+)"$', source, re.M)
    if match is None:
        raise SetupError("CORE_VERSION is missing from src/papyrus/client/_core.py")
    return match.group(1)


def _shipped(download_core: str) -> tuple[str, dict[str, str]]:
    """The core version and the SHA-256 per binary that the Node package pins."""
    version = re.search(r"^const version = '([^']+)';$", download_core, re.M)
    hashes = dict(re.findall(r"'([\w.]+)': '([0-9a-f]{64})'", download_core))
    if version is None or not hashes:
        raise SetupError(f"cannot read the core version from {NODE_PACKAGE}/download_core.js")
    return version.group(1), hashes


def copy_core_extension(destination: Path) -> list[Path]:
    script = NODE_PACKAGE / "download_core.js"
    if not script.is_file():
        raise SetupError(
            f"The PowerSync core extension is not in {NODE_PACKAGE}. Run `make setup` (npm ci in "
            "node-sdk/) before building, or set PAPYRUS_WITHOUT_CORE_EXTENSION=1 to build a "
            "package whose client cannot run (server-only images)."
        )
    version, hashes = _shipped(script.read_text())
    pinned = _pinned_core_version()
    if version != pinned:
        raise SetupError(
            f"node-sdk's @powersync/node ships core {version}, but the client is pinned to "
            f"{pinned} (CORE_VERSION in src/papyrus/client/_core.py): update them together."
        )
    destination.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in BINARIES:
        source = NODE_PACKAGE / "lib" / name
        if not source.is_file():
            raise SetupError(f"{source} is missing: run `make setup` (npm ci in node-sdk/).")
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if digest != hashes.get(name):
            raise SetupError(f"{source} does not have the SHA-256 @powersync/node lists for it.")
        shutil.copyfile(source, destination / name)
        copied.append(destination / name)
    return copied


class BuildPyWithCore(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if os.environ.get("PAPYRUS_WITHOUT_CORE_EXTENSION") == "1":
            return
        copy_core_extension(Path(self.build_lib) / TARGET)


if __name__ == "__main__":  # also under pip/build (setuptools runs this file as __main__)
    setup(cmdclass={"build_py": BuildPyWithCore})
