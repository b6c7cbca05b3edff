"""Who may import whom, read from the source (`ast`), not from what happens to be loaded.

The client ships to apps without the server's dependencies; the development sync service talks
to the server only over HTTP (JWKS) and PostgreSQL; the server stands alone. Shared code lives
in neutral packages that import none of them. Every import counts: module level, inside
functions, under `TYPE_CHECKING`, relative, and `importlib.import_module("papyrus....")`-style
strings.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Importable by everyone; they themselves import none of the capability packages.
NEUTRAL = {"papyrus.contract", "papyrus.sync_config"}
ALLOWED: dict[str, set[str]] = {
    "papyrus.client": {"papyrus.client"} | NEUTRAL,
    "papyrus.devsync": {"papyrus.devsync", "papyrus.embedded_db"} | NEUTRAL,
    "papyrus.server": {"papyrus.server", "papyrus.embedded_db"} | NEUTRAL,
    "papyrus.embedded_db": {"papyrus.embedded_db"} | NEUTRAL,
    **{package: NEUTRAL for package in NEUTRAL},
}
UNCHECKED = {"papyrus.cli"}  # the command line wires everything together
_DYNAMIC = {"import_module", "__import__", "run", "Config"}  # importlib, uvicorn "module:app"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the first-party module imported
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[Import]:
    """The first-party modules `path` imports, however it imports them."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from papyrus import server` names the subpackage; `owner()` maps names in a
            # module (`papyrus.server.config.Settings`) to their package by prefix.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _DYNAMIC:
                targets = [
                    arg.value.split(":")[0]
                    for arg in node.args
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                ]
        found += [
            Import(module, target, node.lineno)
            for target in targets
            if target == "papyrus" or target.startswith("papyrus.")
        ]
    return found


def owner(module: str) -> str | None:
    """The rule a module falls under: the longest ALLOWED/UNCHECKED prefix."""
    for name in sorted([*ALLOWED, *UNCHECKED], key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return None


def violations(root: Path) -> list[str]:
    problems: list[str] = []
    for path in sorted((root / "papyrus").rglob("*.py")):
        module = module_name(path, root)
        rule = owner(module)
        if module == "papyrus" or rule in UNCHECKED:
            continue
        if rule is None:
            problems.append(f"{module} belongs to no rule: add it to ALLOWED in this test")
            continue
        for found in imports_of(path, root):
            if found.target != "papyrus" and owner(found.target) not in ALLOWED[rule]:
                problems.append(str(found))
    return problems


def test_packages_import_only_what_they_may() -> None:
    assert violations(SRC) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, source in {"papyrus/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"papyrus/client/__init__.py": "import papyrus.server.app\n"},
            ["papyrus.client:1 imports papyrus.server.app"],
            id="client-imports-server",
        ),
        pytest.param(
            {
                "papyrus/client/__init__.py": "",
                "papyrus/client/x.py": "def f():\n    from papyrus.devsync import stream\n",
            },
            ["papyrus.client.x:2 imports papyrus.devsync.stream"],
            id="client-imports-devsync-in-a-function",
        ),
        pytest.param(
            {
                "papyrus/devsync/__init__.py": "",
                "papyrus/devsync/a.py": (
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from ..server import config\n"
                ),
                "papyrus/server/__init__.py": "",
                "papyrus/server/config.py": "",
            },
            ["papyrus.devsync.a:3 imports papyrus.server.config"],
            id="devsync-imports-server-relatively-for-types",
        ),
        pytest.param(
            {
                "papyrus/server/__init__.py": "",
                "papyrus/server/a.py": "import importlib as i\ni.import_module('papyrus.client')",
                "papyrus/client/__init__.py": "",
            },
            ["papyrus.server.a:2 imports papyrus.client"],
            id="server-imports-client-dynamically",
        ),
        pytest.param(
            {"papyrus/server/__init__.py": "from papyrus import devsync\n"},
            ["papyrus.server:1 imports papyrus.devsync"],
            id="server-imports-devsync-as-a-name",
        ),
        pytest.param(
            {"papyrus/sync_config/__init__.py": "import papyrus.server\n"},
            ["papyrus.sync_config:1 imports papyrus.server"],
            id="neutral-imports-server",
        ),
        pytest.param(
            {"papyrus/newthing.py": ""},
            ["papyrus.newthing belongs to no rule: add it to ALLOWED in this test"],
            id="unknown-package",
        ),
        pytest.param(
            {
                "papyrus/client/__init__.py": "from papyrus.contract import books\n",
                "papyrus/devsync/__init__.py": "import papyrus.embedded_db, papyrus.sync_config\n",
                "papyrus/server/__init__.py": "from papyrus.embedded_db import EmbeddedPostgres\n",
                "papyrus/cli/__init__.py": "import papyrus.server, papyrus.client\n",
                "papyrus/embedded_db.py": "",
            },
            [],
            id="allowed",
        ),
    ],
)
def test_the_check_catches_every_kind_of_forbidden_import(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    assert violations(_tree(tmp_path, files)) == expected
