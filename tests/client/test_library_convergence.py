"""Devices of one reader converge through the whole stack when they write offline: a transaction
across tables made on one device reaches two Python clients and `@powersync/node`; two devices
shelving the same book offline end with one membership; a delete on one device wins over late
offline edits of the deleted book's children on another."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest

from papyrus import contract
from papyrus.client import AuthProvider
from tests.client.conftest import eventually
from tests.client.library import (
    PASSWORD,
    Key,
    barrier,
    converged,
    delete,
    devices,
    go_offline,
    go_online,
    keys,
    local_rejections,
    local_rows,
    owner_of,
    raw_local_rows,
    server_rejections,
    server_rows,
    snapshot_rows,
    update,
    wanted,
    write,
)
from tests.client.stack import Stack
from tests.e2e.node_client import NODE_SDK, NodeClient
from tests.server.sync.rows import Row

BOOKS = contract.table("books")
SHELVES = contract.table("shelves")
BOOK_SHELVES = contract.table("book_shelves")
ANNOTATIONS = contract.table("annotations")
NOTES = contract.table("notes")


def new_id() -> str:
    return str(uuid.uuid4())


def book(title: str, **values: object) -> Row:
    return Row(BOOKS, new_id(), {"title": title, **values})


def shelf(name: str, **values: object) -> Row:
    return Row(SHELVES, new_id(), {"name": name, **values})


def shelving(on: Row, of: Row, sort_order: int) -> Row:
    data = {"book_id": of.id, "shelf_id": on.id, "sort_order": sort_order}
    row_id = BOOK_SHELVES.derived_id(data)
    assert row_id is not None
    return Row(BOOK_SHELVES, row_id, data)


def highlight(of: Row, text: str, **values: object) -> Row:
    data = {"book_id": of.id, "selected_text": text, "location": {"cfi": "epubcfi(/6/4)"}}
    return Row(ANNOTATIONS, new_id(), {**data, **values})


def settled(*devices_: AuthProvider) -> bool:
    """Nothing waits to upload, and each device has applied the checkpoint covering its last
    upload."""
    return all(d.pending_changes() == 0 and not d.database.local_writes_pending() for d in devices_)


OpenNode = Callable[[str], NodeClient]


@pytest.fixture
def node_reader(stack: Stack) -> Iterator[OpenNode]:
    """Opens `@powersync/node` clients for a reader (by email); fails when the SDK is missing."""
    sdk = NODE_SDK / "node_modules" / "@powersync" / "node"
    if shutil.which("node") is None or not sdk.is_dir():
        pytest.fail("needs node and the Node SDK: run `make setup` (npm ci in node-sdk/)")
    opened: list[NodeClient] = []

    def open_for(email: str) -> NodeClient:
        response = httpx.post(
            f"{stack.api_url}/v1/auth/login",
            json={"email": email, "password": PASSWORD, "client_type": "desktop"},
        )
        assert response.status_code == 200, response.text
        path = stack.tmp_path / f"node-{len(opened)}.db"
        client = NodeClient(path, stack.api_url, stack.sync_url, response.json())
        opened.append(client)
        return client

    try:
        yield open_for
    finally:
        for client in opened:
            client.close()


@pytest.mark.node
def test_an_offline_transaction_across_tables_converges_on_three_clients(
    stack: Stack, node_reader: OpenNode
) -> None:
    a, b = devices(stack, "a", "b")
    owner = owner_of(a)
    assert a.user is not None
    node = node_reader(a.user.email)
    node.call("connect")
    node.call("waitForFirstSync")

    def everywhere(want: Mapping[Key, Any]) -> bool:
        return converged(stack, owner, want, [a, b], [snapshot_rows(node.call("snapshot"))])

    dune = book("Dune", author="Frank Herbert", page_count=412)
    write(a, [dune])
    eventually(lambda: everywhere(wanted([dune], owner)))

    go_offline(a)
    left_hand = book(
        "The Left Hand of Darkness",
        author="Ursula K. Le Guin",
        co_authors=["Introduction: Charlie Jane Anders"],
        is_favorite=True,
        reading_status="reading",
        current_position=0.25,
        started_at="2026-02-01T20:15:00+01:00",
        custom_metadata={"source": "library sale", "price": 2.5},
    )
    hainish = shelf("Hainish cycle", color="#336699", sort_order=2)
    rows = [
        left_hand,
        hainish,
        shelving(hainish, left_hand, 1),
        shelving(hainish, dune, 2),  # a book stored before, on the shelf made offline
        highlight(left_hand, "Light is the left hand of darkness", color="green", note="!"),
        highlight(left_hand, "The only thing that makes life possible", location={"page": 68}),
    ]
    write(a, rows)  # one local transaction, queued while offline
    assert a.pending_changes() == len(rows)
    assert not set(keys(rows)) & set(server_rows(stack, owner)), "nothing left the device"

    go_online(a)
    eventually(lambda: settled(a) and everywhere(wanted([dune, *rows], owner)), timeout=30)
    # Every client's whole library is the server's, value for value, and the three local
    # databases agree exactly (the same text, numbers and encodings).
    server = server_rows(stack, owner)
    assert len(server) == 1 + len(rows)
    assert local_rows(a.database) == server == local_rows(b.database)
    node_snapshot = node.call("snapshot")
    assert snapshot_rows(node_snapshot) == server
    assert raw_local_rows(a.database) == raw_local_rows(b.database) == node_snapshot
    assert local_rejections(a) == [] and server_rejections(a) == []


def test_shelving_a_book_offline_on_two_devices_converges_on_one_membership(
    stack: Stack,
) -> None:
    a, b = devices(stack, "a", "b")
    owner = owner_of(a)
    dune, favourites = book("Dune"), shelf("Favourites")
    write(a, [dune, favourites])
    eventually(lambda: converged(stack, owner, wanted([dune, favourites], owner), [a, b]))

    go_offline(a)
    go_offline(b)
    on_a, on_b = shelving(favourites, dune, 1), shelving(favourites, dune, 2)
    assert on_a.id == on_b.id == f"{dune.id}:{favourites.id}"
    write(a, [on_a])
    write(b, [on_b])
    go_online(a)
    go_online(b)

    key = ("book_shelves", on_a.id)
    eventually(lambda: settled(a, b) and key in server_rows(stack, owner), timeout=30)
    stored = server_rows(stack, owner)[key]
    winner = on_a if stored["sort_order"] == on_a.data["sort_order"] else on_b
    want = wanted([dune, favourites, winner], owner)
    eventually(lambda: converged(stack, owner, want, [a, b]))
    for rows in (server_rows(stack, owner), local_rows(a.database), local_rows(b.database)):
        assert [k for k in rows if k[0] == "book_shelves"] == [key]
    assert stack.sql("SELECT count(*) FROM book_shelves") == [(1,)]
    for device in (a, b):
        assert local_rejections(device) == []
    assert server_rejections(a) == []


def test_a_delete_wins_over_late_offline_edits_of_its_children(stack: Stack) -> None:
    a, b = devices(stack, "a", "b")
    owner = owner_of(a)
    dune, favourites = book("Dune"), shelf("Favourites")
    spice = highlight(dune, "The spice must flow")
    shelved = shelving(favourites, dune, 1)
    rows = [dune, favourites, spice, shelved]
    write(a, rows)
    eventually(lambda: converged(stack, owner, wanted(rows, owner), [a, b]))

    go_offline(b)
    note = Row(NOTES, new_id(), {"book_id": dune.id, "title": "Arrakis", "content": "Desert"})
    with b.database.write_transaction():  # B, offline: edits the highlight, adds a note
        update(b, ANNOTATIONS, spice.id, {"note": "re-read this"})
        write(b, [note])
    delete(a, BOOKS, dune.id)  # meanwhile A deletes the book
    # The book, its highlight, its membership and B's note go; the shelf stays.
    want = dict.fromkeys(keys([dune, spice, shelved, note])) | wanted([favourites], owner)
    eventually(lambda: settled(a) and converged(stack, owner, want, [a]))
    assert stack.sql("SELECT table_name FROM sync_tombstones ORDER BY 1") == [
        ("annotations",),
        ("book_shelves",),
        ("books",),
    ]

    go_online(b)
    eventually(lambda: settled(b) and converged(stack, owner, want, [a, b]), timeout=30)
    listed = server_rejections(b)
    assert ("PATCH", spice.id, "row_deleted") in listed
    assert ("PUT", note.id, "parent_deleted") in listed
    assert len(listed) == 2

    barrier(stack, b, a)  # later traffic brings nothing back
    assert converged(stack, owner, want, [a, b])
    for table in ("books", "annotations", "book_shelves", "notes"):
        assert stack.sql(f"SELECT count(*) FROM {table}") == [(0,)], table
