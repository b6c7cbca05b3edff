"""Loading the core extension, and the errors a broken install gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from papyrus.client import CoreExtensionError, PowerSyncDatabase, Schema, Table
from papyrus.client._core import CoreConnection, locate_core_extension
from papyrus.client.schema import Column


def test_bundled_extension_is_found_and_is_0_5() -> None:
    path = locate_core_extension()
    assert path.name.startswith("libpowersync_")
    assert "@powersync/node/lib" in path.as_posix()
    conn = CoreConnection(":memory:", path)
    try:
        assert conn.version.startswith("0.5.")
        assert len(conn.client_id()) == 36  # powersync_init ran: a client id exists
    finally:
        conn.close()


def test_override_pointing_nowhere_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERSYNC_CORE_PATH", str(tmp_path / "missing.so"))
    with pytest.raises(CoreExtensionError, match=r"POWERSYNC_CORE_PATH points at .*missing\.so"):
        locate_core_extension()


def test_wrong_binary_fails_with_setup_hint(tmp_path: Path) -> None:
    fake = tmp_path / "libpowersync.so"
    fake.write_bytes(b"not a shared library")
    with pytest.raises(CoreExtensionError) as info:
        PowerSyncDatabase(tmp_path / "x.db", Schema([]), core_extension=fake)
    message = str(info.value)
    assert "Could not load" in message
    assert "make setup" in message and "POWERSYNC_CORE_PATH" in message


def test_missing_bundle_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import papyrus.client._core as core

    monkeypatch.delenv("POWERSYNC_CORE_PATH", raising=False)
    monkeypatch.setattr(core, "_NODE_LIB", Path("nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CoreExtensionError, match=r"not found .*make setup"):
        locate_core_extension()


def test_changes_are_reported_after_commit_only(tmp_path: Path) -> None:
    schema = Schema([Table("notes", [Column.text("body")])])
    conn = CoreConnection(tmp_path / "c.db", locate_core_extension())
    conn.replace_schema(schema.to_json_text())
    seen: list[tuple[frozenset[str], bool]] = []
    conn.add_listener(lambda tables, crud: seen.append((tables, crud)))
    conn.execute("INSERT INTO notes (id, body) VALUES ('n1', 'a')")
    assert seen == [(frozenset({"notes"}), True)]
    with pytest.raises(RuntimeError), conn.write():
        conn.query("INSERT INTO notes (id, body) VALUES ('n2', 'b')")
        raise RuntimeError("roll back")
    assert len(seen) == 1  # a rolled-back write notifies nobody
    assert [r["id"] for r in conn.query("SELECT id FROM notes")] == ["n1"]
    conn.close()
