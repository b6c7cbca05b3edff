"""Large local transactions: refused at commit when the server could never take them, uploaded
whole (in parts, a staged upload) otherwise, with retries that never duplicate or lose a change."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from papyrus.client import (
    AuthApiClient,
    AuthRepository,
    PapyrusApiConfig,
    PapyrusConnector,
    PowerSyncDatabase,
    TokenStore,
    TransactionTooLargeError,
    TransientError,
)
from papyrus.client import limits as client_limits
from papyrus.client.books import BookRepository
from papyrus.client.connector import encode_entry
from tests.client.conftest import eventually
from tests.client.stack import Stack
from tests.conftest import LiveServer

PASSWORD = "correct horse battery"
PARTS = "/v1/sync/powersync-upload/parts"
ONE_REQUEST = "/v1/sync/powersync-upload"


def test_the_clients_limits_are_the_servers() -> None:
    from papyrus.server.sync import staging, validation

    assert client_limits.MAX_REQUEST_OPERATIONS == validation.MAX_OPERATIONS
    assert client_limits.MAX_REQUEST_BYTES == validation.MAX_BODY_BYTES
    assert client_limits.MAX_TRANSACTION_OPERATIONS == staging.MAX_TRANSACTION_OPERATIONS
    assert client_limits.MAX_TRANSACTION_BYTES == staging.MAX_TRANSACTION_BYTES


# -- refused at commit ---------------------------------------------------------------------------


def insert_books(database: PowerSyncDatabase, n: int, description: str | None = None) -> None:
    """n rows in one statement (and so one transaction, unless the caller's is open)."""
    database.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
        " INSERT INTO books (id, title, description) SELECT uuid(), 'Book ' || i, ? FROM n",
        (n, description),
    )


def book_count(database: PowerSyncDatabase) -> int:
    return database.get_all("SELECT count(*) AS n FROM books")[0]["n"]


def test_a_transaction_over_the_operation_limit_is_refused_at_commit_and_rolled_back(
    open_db: Callable[..., PowerSyncDatabase],
) -> None:
    database = open_db()
    database.execute("INSERT INTO books (id, title) VALUES (uuid(), 'Kept')")
    too_many = client_limits.MAX_TRANSACTION_OPERATIONS + 1
    with pytest.raises(TransactionTooLargeError) as refused, database.write_transaction():
        database.execute("INSERT INTO books (id, title) VALUES (uuid(), 'Also gone')")
        insert_books(database, too_many - 1)
    error = refused.value
    assert error.operations == too_many and error.max_operations == 100_000
    assert "100,001 changes" in str(error) and "at most 100,000 changes" in str(error)
    assert "nothing of it was written" in str(error)
    assert book_count(database) == 1, "the local rows were rolled back"
    assert database.upload_queue_size() == 1, "nothing was queued"

    insert_books(database, client_limits.MAX_TRANSACTION_OPERATIONS)  # at the limit: fine
    assert database.upload_queue_size() == 1 + client_limits.MAX_TRANSACTION_OPERATIONS


def test_a_transaction_over_the_byte_limit_is_refused_at_commit(
    open_db: Callable[..., PowerSyncDatabase],
) -> None:
    database = open_db()
    database.validate_writes = False  # descriptions over the contract's length: only bytes count
    description = "d" * 1_800_000
    fits = client_limits.MAX_QUEUED_BYTES // (len(description) + 1000)
    with pytest.raises(TransactionTooLargeError) as refused:
        insert_books(database, fits + 1, description=description)  # over the limit in bytes
    error = refused.value
    assert error.operations == fits + 1
    assert error.size_bytes > client_limits.MAX_QUEUED_BYTES == error.max_bytes
    assert client_limits.MAX_QUEUED_BYTES < client_limits.MAX_TRANSACTION_BYTES
    assert f"{client_limits.MAX_QUEUED_BYTES:,} bytes" in str(error)
    assert book_count(database) == 0 and database.upload_queue_size() == 0

    insert_books(database, fits, description=description)
    assert database.upload_queue_size() == fits


def test_one_change_larger_than_a_request_is_refused_at_commit(
    open_db: Callable[..., PowerSyncDatabase],
) -> None:
    database = open_db()
    with pytest.raises(TransactionTooLargeError) as refused:
        database.execute(
            "INSERT INTO books (id, title, description) VALUES (uuid(), 'Huge', ?)",
            ("d" * client_limits.MAX_REQUEST_BYTES,),
        )
    assert refused.value.max_bytes == client_limits.MAX_ENTRY_BYTES
    assert "One change in this transaction" in str(refused.value)
    assert book_count(database) == 0 and database.upload_queue_size() == 0


def test_the_commit_check_counts_at_least_what_the_upload_sends(
    open_db: Callable[..., PowerSyncDatabase],
) -> None:
    """Per change, the check counts the core's stored JSON plus ENTRY_OVERHEAD; the upload sends
    the entry re-encoded with the widest op_id and tx_id. Awkward values included (some the
    contract refuses, such as a position of 1e300: only their encoding matters here)."""
    database = open_db()
    database.validate_writes = False
    with database.write_transaction():
        for title, position in [
            ('tab\tnewline\ncontrol\x01\x1f del\x7f quote" backslash\\ slash/', 0.1 + 0.2),
            ("é 😀 \u2028\u2029 ✓", 1e300),
            ("plain", 1 / 3),
            ("zero", -0.0),
        ]:
            database.execute(
                "INSERT INTO books (id, title, current_position, custom_metadata)"
                " VALUES (uuid(), ?, ?, ?)",
                (title, position, json.dumps({"k": "é\t", "n": [1.5, None]})),
            )
    widest = 2**63 - 1
    for row in database.get_all("SELECT data FROM ps_crud"):
        stored = len(row["data"].encode())
        sent = encode_entry({"op_id": widest, "tx_id": widest, **json.loads(row["data"])})
        assert len(sent) + 1 <= stored + client_limits.ENTRY_OVERHEAD  # +1: the comma


def test_local_only_writes_are_not_limited(open_db: Callable[..., PowerSyncDatabase]) -> None:
    """The guest library queues nothing for upload, so no upload limit applies to it."""
    from papyrus.client import GUEST_SCHEMA

    guest = open_db("guest.db", GUEST_SCHEMA)
    insert_books(guest, client_limits.MAX_TRANSACTION_OPERATIONS + 1)
    assert book_count(guest) == client_limits.MAX_TRANSACTION_OPERATIONS + 1


# -- uploaded in parts, against the real API ------------------------------------------------------


class Network(httpx.BaseTransport):
    """Real HTTP to the API, with failures injected per part request: `fail_before` drops the
    request before it leaves (the server never sees it); `lose_answer` lets the server handle it
    and then drops the answer. Each planned failure happens once."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.sent: list[tuple[str, int | None]] = []
        self.part_bytes = 0
        self.fail_before: set[int] = set()
        self.lose_answer: set[int] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        index = None
        if request.url.path == PARTS:
            index = json.loads(request.content)["index"]
            self.part_bytes += len(request.content)
        elif request.url.path != ONE_REQUEST:
            return self.inner.handle_request(request)
        self.sent.append((request.url.path, index))
        if index in self.fail_before:
            self.fail_before.discard(index)
            raise httpx.ConnectError("injected: the request never left", request=request)
        response = self.inner.handle_request(request)
        response.read()
        if index in self.lose_answer:
            self.lose_answer.discard(index)
            raise httpx.ReadTimeout("injected: the answer was lost", request=request)
        return response

    def parts_sent(self) -> list[int | None]:
        return [index for path, index in self.sent if path == PARTS]


class Device:
    def __init__(self, api_url: str, data_dir: Path, database: PowerSyncDatabase) -> None:
        self.network = Network()
        http = httpx.Client(transport=self.network, timeout=60)
        store = TokenStore.for_config(PapyrusApiConfig(data_dir=data_dir, token_store="file"))
        self.auth = AuthRepository(AuthApiClient(api_url, http=http), store, device_label="t")
        self.user = self.auth.register(f"{uuid.uuid4().hex[:10]}@example.com", PASSWORD, "Ada")
        self.database = database
        self.books = BookRepository(database, self.user.id)
        self.connector = PapyrusConnector(self.auth, "http://127.0.0.1:9")  # no sync service

    def add_books(self, n: int, **values: Any) -> list[str]:
        with self.database.write_transaction():
            return [self.books.add(f"Book {i}", **values).id for i in range(n)]

    def upload_all(self, attempts: int = 10) -> list[Exception]:
        """What the sync loop does: upload_data() until the queue is empty, retrying failures."""
        failures: list[Exception] = []
        for _ in range(attempts):
            if self.database.upload_queue_size() == 0:
                return failures
            try:
                self.connector.upload_data(self.database)
            except TransientError as exc:
                failures.append(exc)
        raise AssertionError(f"the queue did not drain: {failures}")

    def local_rejections(self) -> list[dict[str, Any]]:
        return self.database.get_all("SELECT op_id, code FROM upload_rejections")


@pytest.fixture
def device(app: FastAPI, tmp_path: Path, open_db) -> Iterator[Device]:
    with LiveServer(app) as api:
        yield Device(api.url, tmp_path / "device", open_db())


def server_books(sql) -> list[tuple[str, str]]:
    return [(str(r[0]), r[1]) for r in sql("SELECT id, title FROM books ORDER BY id::text")]


def test_a_transaction_over_one_requests_limits_arrives_whole_in_parts(device: Device, sql) -> None:
    ids = device.add_books(2500)
    assert device.upload_all() == []
    assert device.network.parts_sent() == [0, 1, 2]  # 1,000 entries per request at most
    assert sorted(i for i, _ in server_books(sql)) == sorted(ids)
    assert device.local_rejections() == []
    assert sql("SELECT count(*) FROM sync_upload_parts") == [(0,)]


def test_parts_are_split_by_bytes_too(device: Device, sql) -> None:
    device.add_books(300, description="d" * 19_000)  # about 5.7 MB in 300 entries
    device.upload_all()
    parts = device.network.parts_sent()
    assert parts == list(range(len(parts))) and len(parts) >= 3
    assert sql("SELECT count(*) FROM books") == [(300,)]


def test_a_transaction_that_just_passes_the_commit_check_is_accepted_by_the_server(
    device: Device, sql
) -> None:
    """The commit-time check and the server count bytes differently (stored JSON vs part
    bodies); whatever the first lets through, the second must accept."""
    description = "Une description, répétée. " * 730  # 19,000 characters, within the server's
    probe = len(json.dumps({"description": description}, ensure_ascii=False).encode())
    rows = client_limits.MAX_QUEUED_BYTES // (probe + 250 + client_limits.ENTRY_OVERHEAD)
    device.add_books(rows, description=description)
    queued = device.database.get_all(
        "SELECT sum(length(CAST(data AS BLOB))) + count(*) * ? AS size FROM ps_crud",
        (client_limits.ENTRY_OVERHEAD,),
    )[0]["size"]
    assert client_limits.MAX_QUEUED_BYTES - queued < 2 * probe, "the budget is nearly used up"
    assert device.upload_all() == []
    assert sql("SELECT count(*) FROM books") == [(rows,)]
    assert device.local_rejections() == []
    assert device.network.part_bytes <= client_limits.MAX_TRANSACTION_BYTES


def test_a_small_transaction_still_goes_in_one_request(device: Device, sql) -> None:
    device.add_books(3)
    device.upload_all()
    assert device.network.sent == [(ONE_REQUEST, None)]
    assert sql("SELECT count(*) FROM books") == [(3,)]


def test_a_failed_part_is_retried_without_resending_the_parts_before_it(
    device: Device, sql
) -> None:
    ids = device.add_books(2500)
    device.network.fail_before = {1}
    failures = device.upload_all()
    assert len(failures) == 1
    assert device.network.parts_sent() == [0, 1, 1, 2]
    assert sorted(i for i, _ in server_books(sql)) == sorted(ids)


def test_a_lost_answer_to_the_last_part_resends_from_part_0_and_stores_one_copy(
    device: Device, sql
) -> None:
    ids = device.add_books(2500)
    device.network.lose_answer = {2}  # applied on the server; the client never hears it
    failures = device.upload_all()
    assert len(failures) == 1
    # The retry of the last part is told the parts are gone, and the client starts again.
    assert device.network.parts_sent() == [0, 1, 2, 2, 0, 1, 2]
    assert sorted(i for i, _ in server_books(sql)) == sorted(ids), "exactly one copy of each"
    assert device.local_rejections() == []
    assert sql("SELECT count(*) FROM sync_upload_parts") == [(0,)]


def test_a_restarted_client_sends_its_transaction_again_under_the_same_upload(
    device: Device, app: FastAPI, sql
) -> None:
    """The upload id comes from the queued transaction, so a new process replaces the parts the
    old one staged instead of leaving an abandoned upload behind."""
    ids = device.add_books(2500)
    device.network.fail_before = {2}
    with pytest.raises(TransientError):
        device.connector.upload_data(device.database)
    staged = sql("SELECT DISTINCT upload_id FROM sync_upload_parts")
    assert len(staged) == 1

    device.connector = PapyrusConnector(device.auth, "http://127.0.0.1:9")  # a new process
    device.upload_all()
    assert device.network.parts_sent() == [0, 1, 2, 0, 1, 2]
    assert sorted(i for i, _ in server_books(sql)) == sorted(ids)
    assert sql("SELECT count(*) FROM sync_upload_parts") == [(0,)]


def test_a_rejected_staged_transaction_applies_nothing_and_is_logged_once(
    device: Device, sql, caplog: pytest.LogCaptureFixture
) -> None:
    device.database.validate_writes = False  # the server is the judge here
    with device.database.write_transaction():
        device.add_books(1200)
        # A value the server refuses (ratings are 1..5), written past any local checks.
        device.database.execute(
            "INSERT INTO books (id, title, rating) VALUES (?, 'Bad', 7)", (str(uuid.uuid4()),)
        )
        device.add_books(1200)
    with caplog.at_level(logging.WARNING, logger="papyrus.client.connector"):
        device.upload_all()
    assert len(device.network.parts_sent()) == 3
    assert sql("SELECT count(*) FROM books") == [(0,)], "nothing of the transaction applied"
    assert device.local_rejections() == [{"op_id": 1201, "code": "invalid_value"}]
    warnings = [r for r in caplog.records if r.name == "papyrus.client.connector"]
    assert len(warnings) == 1 and "2401 changes" in warnings[0].getMessage()


# -- through the whole stack (API + development sync service) -----------------------------------


def test_20000_books_in_one_transaction_reach_postgresql_intact(stack: Stack) -> None:
    device = stack.client("device")
    device.register("ada@example.com", PASSWORD, "Ada")
    assert device.database.wait_for_first_sync(20)
    with device.database.write_transaction():
        added = [
            device.library.add(f"Book {i}", author=f"Author {i % 97}", page_count=i)
            for i in range(20_000)
        ]
    eventually(lambda: device.database.status.upload_queue_size == 0, timeout=180)
    rows = stack.sql("SELECT id::text, title, author, page_count FROM books")
    assert sorted(rows) == sorted((b.id, b.title, b.author, b.page_count) for b in added)
    assert device.data_store.rejections() == []
    assert device.auth.server_rejections() == []
    assert stack.sql("SELECT count(*) FROM sync_upload_parts") == [(0,)]
    eventually(lambda: device.database.status.last_error is None)


def test_20000_books_with_one_invalid_are_rejected_whole(stack: Stack) -> None:
    device = stack.client("device", validate_writes=False)  # the server is the judge here
    device.register("ada@example.com", PASSWORD, "Ada")
    assert device.database.wait_for_first_sync(20)
    with device.database.write_transaction():
        for i in range(20_000):
            device.library.add(f"Book {i}")
            if i == 12_345:  # a value the server refuses, written past any local checks
                device.database.execute(
                    "INSERT INTO books (id, title, rating) VALUES (?, 'Bad', 7)",
                    (str(uuid.uuid4()),),
                )
    eventually(lambda: len(device.data_store.rejections()) == 1, timeout=180)
    assert device.data_store.rejections()[0].code == "invalid_value"
    assert stack.sql("SELECT count(*) FROM books") == [(0,)], "nothing of it was applied"
    eventually(lambda: device.library.count() == 0, timeout=60)  # the server's state returns
