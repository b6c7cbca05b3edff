"""The HTTP surface, driven with httpx against the service under uvicorn on loopback."""

from __future__ import annotations

import json
import queue
import re
import threading
from typing import Any

import httpx
import pytest

from papyrus.devsync.checksums import add_checksums, to_signed
from tests.conftest import wait_for

from .conftest import SourceDb

ALICE = "11111111-1111-4111-8111-111111111111"
BOB = "22222222-2222-4222-8222-222222222222"
ALICE_BUCKET = f'1#books|0["{ALICE}"]'
BOB_BUCKET = f'1#books|0["{BOB}"]'
SUBKEY = re.compile(
    r"^[0-9a-f-]{36}/[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$"
)


def request_body(client_id: str = "client-1", buckets: list | None = None, **extra: Any) -> dict:
    body = {
        "buckets": buckets or [],
        "include_checksum": True,
        "raw_data": True,
        "binary_data": True,
        "client_id": client_id,
        "parameters": {},
        "streams": {"include_defaults": True, "subscriptions": []},
    }
    body.update(extra)
    return body


class StreamClient:
    """Reads a sync stream on a thread and checks bucket checksums like the client core."""

    def __init__(self, url: str, token: str, body: dict | None = None) -> None:
        self.lines: queue.Queue[dict | None] = queue.Queue()
        self.headers: dict[str, str] = {}
        self.status: int | None = None
        self.sums: dict[str, int] = {}
        self.expected: dict[str, int] = {}
        self._ready = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(30.0))
        self._thread = threading.Thread(
            target=self._run, args=(url, token, body or request_body()), daemon=True
        )
        self._thread.start()
        assert self._ready.wait(10), "no response headers"

    def _run(self, url: str, token: str, body: dict) -> None:
        try:
            with self._client.stream(
                "POST",
                f"{url}/sync/stream",
                json=body,
                headers={"Authorization": f"Token {token}"},
            ) as response:
                self.status = response.status_code
                self.headers = dict(response.headers)
                self._ready.set()
                for line in response.iter_lines():
                    if line:
                        self.lines.put(json.loads(line))
        except httpx.HTTPError:
            pass
        finally:
            self._ready.set()
            self.lines.put(None)

    def next(self, timeout: float = 10.0) -> dict:
        line = self.lines.get(timeout=timeout)
        assert line is not None, "stream ended"
        self._track(line)
        return line

    def until_complete(self, timeout: float = 10.0) -> list[dict]:
        """Lines up to and including checkpoint_complete; checksums must then match."""
        lines = []
        while True:
            line = self.next(timeout)
            lines.append(line)
            if "checkpoint_complete" in line:
                for bucket, expected in self.expected.items():
                    assert to_signed(self.sums.get(bucket, 0)) == expected, bucket
                return lines

    def quiet_for(self, seconds: float) -> bool:
        try:
            line = self.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        self.lines.put(line)
        return False

    def _track(self, line: dict) -> None:
        if "checkpoint" in line:
            self.expected = {b["bucket"]: b["checksum"] for b in line["checkpoint"]["buckets"]}
        elif "checkpoint_diff" in line:
            for b in line["checkpoint_diff"]["updated_buckets"]:
                self.expected[b["bucket"]] = b["checksum"]
        elif "data" in line:
            bucket = line["data"]["bucket"]
            for op in line["data"]["data"]:
                if op["op"] == "CLEAR":
                    self.sums[bucket] = op["checksum"]
                else:
                    self.sums[bucket] = add_checksums(self.sums.get(bucket, 0), op["checksum"])

    def close(self) -> None:
        # The reader thread ends when the service closes the stream (daemon thread).
        self._client.close()


@pytest.fixture
def streams():
    opened: list[StreamClient] = []

    def open_stream(url: str, token: str, body: dict | None = None) -> StreamClient:
        client = StreamClient(url, token, body)
        opened.append(client)
        return client

    yield open_stream
    for client in opened:
        client.close()


def test_initial_sync_lines(source_db: SourceDb, start_service, signer_session, streams) -> None:
    dune = source_db.insert_book(ALICE, "Dune", is_favorite=True, page_count=412)
    emma = source_db.insert_book(ALICE, "Emma")
    source_db.insert_book(BOB, "Ulysses")
    service = start_service()
    stream = streams(service.url, signer_session.token(ALICE))
    assert stream.status == 200
    assert stream.headers["content-type"] == "application/x-ndjson"
    assert stream.headers["x-accel-buffering"] == "no"

    checkpoint, data, complete = stream.until_complete()
    assert list(checkpoint) == ["checkpoint"]
    body = checkpoint["checkpoint"]
    assert body["last_op_id"] == "3"
    assert "write_checkpoint" not in body
    (bucket,) = body["buckets"]
    assert bucket["bucket"] == ALICE_BUCKET
    assert bucket["count"] == 2
    assert bucket["priority"] == 3
    assert bucket["subscriptions"] == [{"default": 0}]
    assert body["streams"] == [{"name": "books", "is_default": True, "errors": []}]

    page = data["data"]
    assert page["bucket"] == ALICE_BUCKET
    assert page["after"] == "0"
    assert page["has_more"] is False
    assert {op["object_id"] for op in page["data"]} == {dune, emma}
    assert page["next_after"] == page["data"][-1]["op_id"]
    for op in page["data"]:
        assert isinstance(op["op_id"], str) and op["op"] == "PUT"
        assert op["object_type"] == "books"
        assert isinstance(op["data"], str) and isinstance(op["checksum"], int)
        assert SUBKEY.match(op["subkey"])
    row = json.loads(next(op["data"] for op in page["data"] if op["object_id"] == dune))
    assert row["title"] == "Dune" and row["is_favorite"] == 1 and row["page_count"] == 412
    assert complete == {"checkpoint_complete": {"last_op_id": "3"}}

    # Reconnecting from the last checkpoint sends the checkpoint and no data again.
    again = streams(
        service.url,
        signer_session.token(ALICE),
        request_body(buckets=[{"name": ALICE_BUCKET, "after": "3"}]),
    )
    again.sums = dict(stream.sums)  # what the client kept locally
    lines = again.until_complete()
    assert [next(iter(line)) for line in lines] == ["checkpoint", "checkpoint_complete"]


def test_live_changes_reach_only_their_owner(
    source_db: SourceDb, start_service, signer_session, streams
) -> None:
    book = source_db.insert_book(ALICE, "Dune")
    service = start_service()
    alice = streams(service.url, signer_session.token(ALICE))
    bob = streams(service.url, signer_session.token(BOB), request_body("client-bob"))
    alice.until_complete()
    bob_checkpoint = bob.until_complete()[0]["checkpoint"]
    assert bob_checkpoint["buckets"] == [
        {
            "bucket": BOB_BUCKET,
            "checksum": 0,
            "count": 0,
            "priority": 3,
            "subscriptions": [{"default": 0}],
        }
    ]

    ulysses = source_db.insert_book(ALICE, "Ulysses")
    diff, data, complete = alice.until_complete()
    assert diff["checkpoint_diff"]["removed_buckets"] == []
    (updated,) = diff["checkpoint_diff"]["updated_buckets"]
    assert updated["bucket"] == ALICE_BUCKET and updated["count"] == 2
    assert data["data"]["after"] == "1"
    assert [op["object_id"] for op in data["data"]["data"]] == [ulysses]
    assert complete["checkpoint_complete"]["last_op_id"] == diff["checkpoint_diff"]["last_op_id"]

    source_db.execute("UPDATE books SET title = 'Dune Messiah' WHERE id = %s", (book,))
    _, data, _ = alice.until_complete()
    (put,) = data["data"]["data"]
    assert json.loads(put["data"])["title"] == "Dune Messiah"
    dune_subkey = put["subkey"]

    source_db.execute("DELETE FROM books WHERE id = %s", (book,))
    _, data, _ = alice.until_complete()
    (remove,) = data["data"]["data"]
    assert remove["op"] == "REMOVE" and remove["object_id"] == book
    assert remove["subkey"] == dune_subkey and remove["data"] is None
    assert bob.quiet_for(0.3), "Bob must see none of Alice's changes"

    # Owner change: Alice's copy is removed, Bob receives the row.
    source_db.execute("UPDATE books SET owner_user_id = %s WHERE id = %s", (BOB, ulysses))
    _, data, _ = alice.until_complete()
    assert [(op["op"], op["object_id"]) for op in data["data"]["data"]] == [("REMOVE", ulysses)]
    _, data, _ = bob.until_complete()
    assert [(op["op"], op["object_id"]) for op in data["data"]["data"]] == [("PUT", ulysses)]


def test_each_commit_reaches_a_connected_client(
    source_db: SourceDb, start_service, signer_session, streams
) -> None:
    """Every commit is pushed as its own checkpoint, in order (its latency is measured by
    bench/devsync_bench.py)."""
    book = source_db.insert_book(ALICE, "Dune")
    service = start_service()
    alice = streams(service.url, signer_session.token(ALICE))
    alice.until_complete()
    for i in range(20):
        source_db.execute("UPDATE books SET current_page = %s WHERE id = %s", (i, book))
        lines = alice.until_complete()
        pages = [
            json.loads(op["data"])["current_page"]
            for line in lines
            if "data" in line
            for op in line["data"]["data"]
        ]
        assert pages == [i]


def test_big_bucket_streams_in_chunks(source_db: SourceDb, start_service, signer_session, streams):
    source_db.execute(
        "INSERT INTO books (id, owner_user_id, title)"
        " SELECT gen_random_uuid(), %s, 'Book ' || i FROM generate_series(1, 2500) i",
        (ALICE,),
    )
    service = start_service(data_chunk_ops=1000)
    alice = streams(service.url, signer_session.token(ALICE))
    lines = alice.until_complete()
    pages = [line["data"] for line in lines if "data" in line]
    assert [len(p["data"]) for p in pages] == [1000, 1000, 500]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert [p["after"] for p in pages] == ["0", pages[0]["next_after"], pages[1]["next_after"]]


def test_auth_failures_answer_like_the_service(
    source_db: SourceDb, start_service, signer_session
) -> None:
    service = start_service()
    url = f"{service.url}/sync/stream"

    def post(headers: dict[str, str], body: Any = None) -> httpx.Response:
        return httpx.post(url, json=request_body() if body is None else body, headers=headers)

    def error_of(response: httpx.Response) -> dict:
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["status"] == 401
        return error

    assert error_of(post({}))["code"] == "PSYNC_S2106"
    assert error_of(post({"Authorization": "Token not-a-jwt"}))["code"] == "PSYNC_S2101"
    expired = signer_session.token(ALICE, expires_in=-120)
    assert error_of(post({"Authorization": f"Token {expired}"}))["code"] == "PSYNC_S2103"
    wrong_aud = signer_session.token(ALICE, aud="someone-else")
    assert error_of(post({"Authorization": f"Bearer {wrong_aud}"}))["code"] == "PSYNC_S2105"
    no_aud = signer_session.token(ALICE, aud=None)
    assert error_of(post({"Authorization": f"Token {no_aud}"}))["code"] == "PSYNC_S2105"
    too_long = signer_session.token(ALICE, expires_in=3 * 86400)
    assert error_of(post({"Authorization": f"Token {too_long}"}))["code"] == "PSYNC_S2104"
    forged = signer_session.token(ALICE)[:-8] + "AAAAAAAA"
    assert error_of(post({"Authorization": f"Token {forged}"}))["code"] == "PSYNC_S2101"
    response = httpx.get(f"{service.url}/write-checkpoint2.json?client_id=c")
    assert error_of(response)["code"] == "PSYNC_S2106"
    # The body is validated before the token, as in the service.
    assert post({}, body={"buckets": "nope"}).status_code == 400
    json_type = {"content-type": "application/json"}
    for raw in (b"{", b'{"buckets": "\xff"}', b"[" * 100_000):  # not JSON, not UTF-8, too deep
        assert httpx.post(url, content=raw, headers=json_type).status_code == 400, raw[:20]


def test_jwks_is_refetched_for_an_unknown_kid(
    source_db: SourceDb, start_service, signer_session, streams
) -> None:
    service = start_service()
    service.service.keys.min_refetch_seconds = 0
    first = streams(service.url, signer_session.token(ALICE))
    first.until_complete()
    requests_before = signer_session.jwks_requests
    new_kid = signer_session.add_key()  # rotated on the API side after our keys were cached
    second = streams(service.url, signer_session.token(ALICE, kid=new_kid))
    assert second.status == 200
    assert second.next()["checkpoint"]["buckets"][0]["bucket"] == ALICE_BUCKET
    assert signer_session.jwks_requests == requests_before + 1


def test_write_checkpoints(source_db: SourceDb, start_service, signer_session, streams) -> None:
    service = start_service()
    token = signer_session.token(ALICE)
    headers = {"Authorization": f"Token {token}"}
    stream = streams(service.url, token, request_body("c1"))
    stream.until_complete()

    def write_checkpoint(client_id: str) -> str:
        response = httpx.get(
            f"{service.url}/write-checkpoint2.json",
            params={"client_id": client_id},
            headers=headers,
        )
        assert response.status_code == 200
        return response.json()["data"]["write_checkpoint"]

    assert write_checkpoint("c1") == "1"
    diff, complete = stream.until_complete()
    assert diff == {
        "checkpoint_diff": {
            "last_op_id": "0",
            "write_checkpoint": "1",
            "removed_buckets": [],
            "updated_buckets": [],
        }
    }
    assert complete == {"checkpoint_complete": {"last_op_id": "0"}}

    # An upload followed by a write checkpoint: the checkpoint carrying it includes the data.
    book = source_db.insert_book(ALICE, "Uploaded")
    assert write_checkpoint("c1") == "2"
    seen_book = False
    while True:
        line = stream.next()
        if "data" in line:
            seen_book = seen_book or book in {op["object_id"] for op in line["data"]["data"]}
        head = line.get("checkpoint_diff")
        if head and head.get("write_checkpoint") == "2":
            assert int(head["last_op_id"]) >= 1
            break
        if head:
            assert head["write_checkpoint"] == "1", "diffs repeat the current write checkpoint"
    rest = stream.until_complete()
    seen_book = seen_book or any(
        book in {op["object_id"] for op in line["data"]["data"]} for line in rest if "data" in line
    )
    assert seen_book

    # New connections start with the latest value; other clients of the user are separate.
    again = streams(service.url, token, request_body("c1"))
    assert again.next()["checkpoint"]["write_checkpoint"] == "2"
    other = streams(service.url, token, request_body("c2"))
    assert "write_checkpoint" not in other.next()["checkpoint"]


def test_token_expiry_keepalives_and_end(
    source_db: SourceDb, start_service, signer_session, streams
) -> None:
    service = start_service(keepalive_interval=0.4, expiry_warning=1.0)
    stream = streams(service.url, signer_session.token(ALICE, expires_in=2.2))
    stream.until_complete()
    values = []
    while True:
        line = stream.lines.get(timeout=10)
        if line is None:
            break
        values.append(line["token_expires_in"])
    assert len(values) >= 3
    assert 1 <= values[0] <= 3
    assert values[-1] == 0
    assert values == sorted(values, reverse=True)

    # A token that expired within the clock tolerance ends the stream straight away.
    stale = streams(service.url, signer_session.token(ALICE, expires_in=-5))
    assert stale.status == 200
    assert stale.lines.get(timeout=5) == {"token_expires_in": 0}
    assert stale.lines.get(timeout=5) is None


def test_probes(source_db: SourceDb, start_service) -> None:
    service = start_service()
    live = httpx.get(f"{service.url}/probes/liveness")
    ready = httpx.get(f"{service.url}/probes/readiness")
    assert live.status_code == 200 and ready.status_code == 200
    assert ready.json()["ready"] is True


def test_compacted_bucket_still_validates(
    source_db: SourceDb, start_service, signer_session, streams
) -> None:
    service = start_service(compact_every_ops=1, compact_interval=0)
    book = source_db.insert_book(ALICE, "Draft")
    for i in range(5):
        source_db.execute("UPDATE books SET title = %s WHERE id = %s", (f"Draft {i}", book))
    source_db.insert_book(ALICE, "Another")
    # Compaction runs whenever replication is idle, so it may run before the last insert
    # arrives; wait for the fully compacted bucket, not just the first CLEAR.
    wait_for(
        lambda: (
            source_db.fetchall("SELECT array_agg(op ORDER BY op_id) FROM powersync_dev.ops")[0][0]
            == ["CLEAR", "PUT", "PUT"]
            or None
        ),
        10,
        "compaction",
    )
    stream = streams(service.url, signer_session.token(ALICE))
    lines = stream.until_complete()  # checksums are verified here
    ops = [op for line in lines if "data" in line for op in line["data"]["data"]]
    assert ops[0]["op"] == "CLEAR"
    titles = [json.loads(op["data"])["title"] for op in ops if op["op"] == "PUT"]
    assert titles == ["Draft 4", "Another"]
