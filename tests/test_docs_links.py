"""The documentation stands alone: every Markdown file links only to what the repository holds.

A relative link or image must name a file or directory of the repository, an anchor must name a
heading of its target (GitHub's slugs), and neither a link nor a path in the text may point
outside the repository (`../shared/...`, `/work/...`). External links are http(s) only.
"""

from __future__ import annotations

import os
import re
import subprocess
import unicodedata
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[1]

# Folders that are never part of the repository (used when git cannot list the files).
_NOT_IN_REPOSITORY = {
    ".git",
    ".venv",
    "node_modules",
    "build",
    "dist",
    ".local",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
}
_EXTERNAL_SCHEMES = {"http", "https", "mailto"}
_HTML_TARGET = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
_HTML_ANCHOR = re.compile(r"""\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)
# A relative path that climbs out of its folder, as written in prose or code.
_PARENT_PATH = re.compile(r"(?<![\w./-])(?:\.\./)+[^\s`'\"()<>\[\]|,;]*")
# Paths of a developer's machine, which no reader has.
_MACHINE_PATH = re.compile(r"(?<![\w.~/:-])/(?:work|home|Users|root)/[^\s`'\"()<>]*")
# The team's notes folder beside the checkout; what readers need from it lives in docs/.
_OUTSIDE_FOLDERS = ("shared/docs",)

_MARKDOWN = MarkdownIt("commonmark").enable("table")


def repository_files(root: Path) -> set[str]:
    """Paths (POSIX, relative to `root`) of the files that are or will be committed."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = {p for p in listed.split("\0") if p}
        return {p for p in files if (root / p).exists()}  # deleted but not yet staged
    except (OSError, subprocess.CalledProcessError):
        found = set()
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in _NOT_IN_REPOSITORY]
            for name in names:
                found.add((Path(folder) / name).relative_to(root).as_posix())
        return found


def github_slug(text: str, seen: dict[str, int]) -> str:
    """The anchor GitHub gives a heading (github-slugger): lower case; letters, digits, marks,
    `_`, `-` and spaces kept, spaces turned into `-`; repeats get `-1`, `-2`, ..."""
    kept = "".join(
        c
        for c in text.lower()
        if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc"
    )
    slug = base = kept.replace(" ", "-")
    while slug in seen:
        seen[base] += 1
        slug = f"{base}-{seen[base]}"
    seen[slug] = 0
    return slug


def _plain_text(inline: Token) -> str:
    parts = []
    for child in inline.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts).strip()


@dataclass
class Document:
    path: str
    text: str
    anchors: set[str] = field(default_factory=set)
    targets: list[tuple[int, str]] = field(default_factory=list)  # (line, link target)

    @classmethod
    def parse(cls, path: str, text: str) -> Document:
        doc = cls(path, text)
        tokens = _MARKDOWN.parse(text)
        seen: dict[str, int] = {}
        for index, token in enumerate(tokens):
            line = token.map[0] + 1 if token.map else 0
            if token.type == "heading_open":
                doc.anchors.add(github_slug(_plain_text(tokens[index + 1]), seen))
            elif token.type == "html_block":
                doc._html(token.content, line)
            elif token.type == "inline":
                for child in token.children or ():
                    if child.type == "link_open":
                        doc._target(str(child.attrs.get("href", "")), token)
                    elif child.type == "image":
                        doc._target(str(child.attrs.get("src", "")), token)
                    elif child.type == "html_inline":
                        doc._html(child.content, line)
        return doc

    def _target(self, target: str, inline: Token) -> None:
        """Records a link with the line it is written on (the first of its paragraph that
        mentions it; a reference definition's line is not known, so the paragraph's)."""
        start, end = inline.map or (0, 0)
        lines = self.text.splitlines()[start:end]
        written = next((i for i, text in enumerate(lines) if target in text), 0)
        self.targets.append((start + written + 1, target))

    def _html(self, html: str, line: int) -> None:
        self.targets += [(line, target) for target in _HTML_TARGET.findall(html)]
        self.anchors.update(_HTML_ANCHOR.findall(html))


class Checker:
    """Finds every problem in the Markdown files of a repository."""

    def __init__(self, root: Path, files: Iterable[str]) -> None:
        self.root = root
        self.files = set(files)
        self.dirs = {
            parent.as_posix() for f in self.files for parent in Path(f).parents if parent.parts
        }
        self._docs: dict[str, Document] = {}

    def markdown_files(self) -> list[str]:
        return sorted(f for f in self.files if f.lower().endswith(".md"))

    def document(self, path: str) -> Document:
        if path not in self._docs:
            text = (self.root / path).read_text(encoding="utf-8")
            self._docs[path] = Document.parse(path, text)
        return self._docs[path]

    def problems(self) -> list[str]:
        found: list[str] = []
        for path in self.markdown_files():
            doc = self.document(path)
            for line, target in doc.targets:
                problem = self.check_link(path, target)
                if problem:
                    found.append(f"{path}:{line}: {target!r}: {problem}")
            found += [f"{path}:{line}: {problem}" for line, problem in self.check_text(doc)]
        return found

    def _resolve(self, source: str, relative: str) -> str | None:
        """`relative` (from the folder of `source`) as a repository path; None outside it."""
        joined = os.path.normpath(os.path.join(os.path.dirname(source), relative))
        if joined == ".":
            return ""
        if joined.startswith("..") or os.path.isabs(joined):
            return None
        return Path(joined).as_posix()

    def check_link(self, source: str, target: str) -> str | None:
        split = urllib.parse.urlsplit(target)
        if split.scheme or split.netloc:
            if split.scheme.lower() in _EXTERNAL_SCHEMES and (
                split.netloc or split.scheme == "mailto"
            ):
                return None
            return "only http(s) links may leave the repository"
        path = urllib.parse.unquote(split.path)
        fragment = urllib.parse.unquote(split.fragment)
        if path.startswith("/"):
            return "an absolute path; link relative to this file"
        if not path:
            resolved = source
        else:
            found = self._resolve(source, path)
            if found is None:
                return "leaves the repository"
            resolved = found
            if resolved not in self.files and resolved not in self.dirs and resolved != "":
                return f"no such file or directory in the repository ({resolved})"
        is_markdown = resolved in self.files and resolved.lower().endswith(".md")
        if fragment and is_markdown and fragment not in self.document(resolved).anchors:
            return f"no heading in {resolved} has the anchor #{fragment}"
        return None

    def check_text(self, doc: Document) -> list[tuple[int, str]]:
        """Paths written in the text (code included) that lead out of the repository."""
        found = []
        for number, line in enumerate(doc.text.splitlines(), 1):
            for match in _PARENT_PATH.finditer(line):
                written = match.group().rstrip(".:")
                resolved = self._resolve(doc.path, written.split("#")[0])
                if resolved is None:
                    found.append((number, f"{written!r} leads out of the repository"))
                elif resolved not in self.files and resolved not in self.dirs and resolved:
                    found.append((number, f"{written!r} names nothing in the repository"))
            for match in _MACHINE_PATH.finditer(line):
                found.append((number, f"{match.group()!r} is a path on someone's machine"))
            if "file://" in line:
                found.append((number, "a file:// URL points at someone's machine"))
            for folder in _OUTSIDE_FOLDERS:
                if folder in line:
                    found.append((number, f"{folder!r} is outside the repository"))
        return found


def test_the_repository_documentation_links_only_to_itself() -> None:
    checker = Checker(ROOT, repository_files(ROOT))
    assert "README.md" in checker.markdown_files()
    assert "docs/powersync-protocol.md" in checker.markdown_files()
    problems = checker.problems()
    assert not problems, "\n".join(problems)


# -- the checker itself, on a small repository of its own -----------------------------------

GOOD = """\
# Guide

See [the notes](docs/notes.md), [a section](docs/notes.md#the-sync-loop-syncpy),
[the folder](docs/), [here](#guide), ![diagram](docs/flow.png),
[an external page](https://example.com/work/x) and <a href="docs/notes.md">notes</a>.
Paths like `src/app.py`, `/v1/auth/login` and `~/.local/share/papyrus` are not links.
"""
NOTES = """\
# Notes

## The sync loop (`sync.py`)

## Staged uploads: `POST /v1/sync/powersync-upload/parts`

## Twice

## Twice

[back](../README.md#guide), [code](../src/app.py); the code is in `../src/app.py`.
"""


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "README.md").write_text(GOOD)
    (tmp_path / "docs" / "notes.md").write_text(NOTES)
    (tmp_path / "docs" / "flow.png").write_bytes(b"\x89PNG")
    (tmp_path / "src" / "app.py").write_text("")
    return tmp_path


def _problems(root: Path) -> list[str]:
    return Checker(root, repository_files(root)).problems()


def test_a_clean_repository_passes(repository: Path) -> None:
    assert _problems(repository) == []
    anchors = Document.parse("docs/notes.md", NOTES).anchors
    assert {
        "notes",
        "the-sync-loop-syncpy",
        "staged-uploads-post-v1syncpowersync-uploadparts",
        "twice",
        "twice-1",
    } <= anchors


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("[gone](docs/missing.md)", "no such file or directory"),
        ("![gone](docs/missing.png)", "no such file or directory"),
        ('<img src="img/none.svg">', "no such file or directory"),
        ("[ref][r]\n\n[r]: src/missing.py", "no such file or directory"),
        ("[protocol](../shared/docs/powersync-protocol.md)", "leaves the repository"),
        ("[protocol](../../docs/notes.md)", "leaves the repository"),
        ("Run `../bin/tool` first.", "leads out of the repository"),
        ("[abs](/work/shared/docs/powersync-protocol.md)", "an absolute path"),
        ("[ftp](ftp://example.com/notes.md)", "only http(s) links"),
        ("[file](file:///srv/notes.md)", "a file:// URL"),
        ("[anchor](docs/notes.md#no-such-heading)", "no heading in docs/notes.md"),
        ("[anchor](#nowhere)", "no heading in README.md"),
        ("They complement `../shared/docs/powersync-protocol.md`.", "leads out of the repository"),
        ("following section 6.5 of `shared/docs/powersync-protocol.md`", "outside the repository"),
        ("Recorded in /work/shared/docs/powersync-captures/.", "a path on someone's machine"),
        ("```\ncat /home/ada/notes.txt\n```", "a path on someone's machine"),
    ],
)
def test_each_kind_of_bad_reference_is_reported(
    repository: Path, markdown: str, expected: str
) -> None:
    planted = len(GOOD.splitlines()) + 2
    with (repository / "README.md").open("a") as readme:
        readme.write("\n" + markdown + "\n")
    problems = _problems(repository)
    assert any(expected in problem for problem in problems), problems
    assert all(
        problem.startswith("README.md:") and int(problem.split(":")[1]) >= planted
        for problem in problems
    ), problems
