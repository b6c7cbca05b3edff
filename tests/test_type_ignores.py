"""Every `# type: ignore[code]` in the source says why on the same line, as the README promises.

Read with `tokenize`, so only real comments count, not text inside strings.
"""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

_IGNORE = re.compile(r"type:\s*ignore")
# The error code, then a second comment with some text: the reason.
_EXPLAINED = re.compile(r"type:\s*ignore\[[\w\-, ]+\]\s*#\s*\S")


def _unexplained(path: Path) -> list[int]:
    """The lines of `path` with a `type: ignore` comment lacking a code or a reason."""
    with path.open("rb") as source:
        return [
            token.start[0]
            for token in tokenize.tokenize(source.readline)
            if token.type == tokenize.COMMENT
            and _IGNORE.search(token.string)
            and not _EXPLAINED.search(token.string)
        ]


def test_every_type_ignore_has_a_code_and_a_reason() -> None:
    found = [
        f"{path.relative_to(SRC)}:{line}"
        for path in sorted(SRC.rglob("*.py"))
        for line in _unexplained(path)
    ]
    assert found == []


def test_the_check_tells_a_reason_from_none(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "a = f()  # type: ignore[attr-defined]\n"
        "b = f()  # type: ignore\n"
        "c = f()  # type: ignore[attr-defined]  # set at import\n"
        "d = '# type: ignore[attr-defined]'\n"
        "e = f()  # type: ignore[attr-defined]  #\n"
    )
    assert _unexplained(module) == [1, 2, 5]
