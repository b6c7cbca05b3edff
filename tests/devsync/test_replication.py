"""Logical replication into the op log, against a real PostgreSQL."""

from __future__ import annotations

import json
import uuid

import psycopg

from papyrus.devsync.checksums import add_checksums, put_checksum, remove_checksum
from papyrus.devsync.storage import StorageWriter
from papyrus.devsync.sync_rules import parse_sync_config

from .conftest import BOOKS_CONFIG, SourceDb

ALICE = "11111111-1111-4111-8111-111111111111"
BOB = "22222222-2222-4222-8222-222222222222"


def bucket(user: str, version: int = 1) -> str:
    return f'{version}#books|0["{user}"]'


def test_initial_snapshot_of_existing_rows(source_db: SourceDb, start_replicator) -> None:
    dune = source_db.insert_book(ALICE, "Dune", is_favorite=True, page_count=412)
    emma = source_db.insert_book(BOB, "Emma", current_position=0.25)
    start_replicator()
    ops = source_db.ops()
    assert {(op[1], op[2], op[3]) for op in ops} == {
        (bucket(ALICE), "PUT", dune),
        (bucket(BOB), "PUT", emma),
    }
    by_id = {op[3]: json.loads(op[5]) for op in ops}
    assert by_id[dune]["is_favorite"] == 1
    assert by_id[dune]["page_count"] == 412
    assert by_id[emma]["current_position"] == 0.25
    assert by_id[dune]["added_at"].endswith("Z") and "T" in by_id[dune]["added_at"]
    for op in ops:
        assert op[6] == put_checksum("books", op[3], op[5])
    assert source_db.state()[2] is True


def test_changes_become_ops_in_commit_order(source_db: SourceDb, start_replicator) -> None:
    running = start_replicator()
    book = str(uuid.uuid4())
    with (
        psycopg.connect(source_db.conninfo) as first,
        psycopg.connect(source_db.conninfo) as second,
    ):
        # `first` writes before `second` but commits after it: commit order wins.
        first.execute(
            "INSERT INTO books (id, owner_user_id, title) VALUES (%s, %s, 'Late')",
            (str(uuid.uuid4()), ALICE),
        )
        second.execute(
            "INSERT INTO books (id, owner_user_id, title) VALUES (%s, %s, 'Early')", (book, ALICE)
        )
        second.commit()
        first.commit()
    source_db.execute("UPDATE books SET title = 'Early, revised' WHERE id = %s", (book,))
    source_db.execute("DELETE FROM books WHERE id = %s", (book,))
    running.sync()
    ops = source_db.ops()
    titles = [json.loads(op[5])["title"] if op[5] else None for op in ops]
    assert titles == ["Early", "Late", "Early, revised", None]
    assert [op[2] for op in ops] == ["PUT", "PUT", "PUT", "REMOVE"]
    assert [op[0] for op in ops] == [1, 2, 3, 4]
    put_subkeys = {op[4] for op in ops if op[3] == book}
    assert len(put_subkeys) == 1, "REMOVE must carry the PUT's subkey"
    remove = ops[-1]
    assert remove[6] == remove_checksum(remove[4])


def test_rolled_back_transactions_produce_nothing(source_db: SourceDb, start_replicator) -> None:
    running = start_replicator()
    with psycopg.connect(source_db.conninfo) as conn:
        conn.execute(
            "INSERT INTO books (id, owner_user_id, title) VALUES (%s, %s, 'Ghost')",
            (str(uuid.uuid4()), ALICE),
        )
        conn.rollback()
    source_db.insert_book(ALICE, "Real")
    running.sync()
    assert [json.loads(op[5])["title"] for op in source_db.ops()] == ["Real"]


def test_owner_change_moves_row_between_buckets(source_db: SourceDb, start_replicator) -> None:
    running = start_replicator()
    book = source_db.insert_book(ALICE, "Ulysses")
    source_db.execute("UPDATE books SET owner_user_id = %s WHERE id = %s", (BOB, book))
    running.sync()
    ops = source_db.ops()
    # As the service does: PUT into the new bucket first, then REMOVE from the old one.
    assert [(op[1], op[2]) for op in ops] == [
        (bucket(ALICE), "PUT"),
        (bucket(BOB), "PUT"),
        (bucket(ALICE), "REMOVE"),
    ]
    assert ops[1][4] == ops[0][4] == ops[2][4]
    sums = dict(source_db.fetchall("SELECT bucket, checksum FROM powersync_dev.buckets"))
    assert sums[bucket(ALICE)] == add_checksums(ops[0][6], ops[2][6])
    assert sums[bucket(BOB)] == ops[1][6]


def test_restart_resumes_without_loss_or_duplicates(source_db: SourceDb, start_replicator) -> None:
    running = start_replicator()
    source_db.insert_book(ALICE, "One")
    running.sync()
    running.stop()
    # Written while the service is down: must arrive exactly once after the restart.
    source_db.insert_book(ALICE, "Two")
    source_db.insert_book(ALICE, "Three")
    running = start_replicator()
    source_db.insert_book(ALICE, "Four")
    running.sync()
    titles = [json.loads(op[5])["title"] for op in source_db.ops()]
    assert titles == ["One", "Two", "Three", "Four"]
    assert [op[0] for op in source_db.ops()] == [1, 2, 3, 4]


def test_redelivered_transaction_is_skipped(source_db: SourceDb, start_replicator) -> None:
    running = start_replicator()
    # Crash after the storage commit but before the slot is acknowledged.
    running.replicator._acknowledge = lambda cur, lsn: None
    source_db.insert_book(ALICE, "Once")
    running.sync()
    running.stop()
    stored_lsn = source_db.state()[1]
    behind = source_db.fetchall(
        "SELECT confirmed_flush_lsn < %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (stored_lsn, source_db.slot_name),
    )[0][0]
    assert behind, "the slot must still hold the stored transaction"
    running = start_replicator()
    source_db.insert_book(ALICE, "Twice")
    running.sync()
    assert [json.loads(op[5])["title"] for op in source_db.ops()] == ["Once", "Twice"]


def test_unchanged_toast_values_are_kept(source_db: SourceDb, start_replicator) -> None:
    running = start_replicator()
    long_text = "".join(str(uuid.uuid4()) for _ in range(400))  # ~14 KB, stored out of line
    book = source_db.insert_book(ALICE, "Big", description=long_text)
    source_db.execute("UPDATE books SET title = 'Big 2' WHERE id = %s", (book,))
    running.sync()
    last = json.loads(source_db.ops()[-1][5])
    assert last["title"] == "Big 2"
    assert last["description"] == long_text


def test_large_transaction_is_atomic_and_truncate_removes(source_db, start_replicator) -> None:
    running = start_replicator()
    source_db.execute(
        "INSERT INTO books (id, owner_user_id, title)"
        " SELECT gen_random_uuid(), %s, 'Book ' || i FROM generate_series(1, 12000) i",
        (ALICE,),
    )
    running.sync()
    count, last_op = source_db.fetchall(
        "SELECT count, last_op FROM powersync_dev.buckets WHERE bucket = %s", (bucket(ALICE),)
    )[0]
    assert (count, last_op) == (12000, 12000)
    source_db.execute("TRUNCATE books CASCADE")  # the declared children reference books
    running.sync()
    removes = source_db.fetchall("SELECT count(*) FROM powersync_dev.ops WHERE op = 'REMOVE'")[0][0]
    assert removes == 12000
    assert source_db.fetchall("SELECT count(*) FROM powersync_dev.current_data")[0][0] == 0


def test_compaction_keeps_checksums(source_db: SourceDb, start_replicator) -> None:
    running = start_replicator()
    keep = source_db.insert_book(ALICE, "Keep")
    gone = source_db.insert_book(ALICE, "Gone")
    for i in range(3):
        source_db.execute("UPDATE books SET title = %s WHERE id = %s", (f"Keep {i}", keep))
    source_db.execute("DELETE FROM books WHERE id = %s", (gone,))
    running.sync()
    running.stop()
    before = source_db.fetchall("SELECT bucket, checksum FROM powersync_dev.buckets")
    op_sum = source_db.fetchall("SELECT sum(checksum) % 4294967296 FROM powersync_dev.ops")[0][0]
    writer = StorageWriter(source_db.conninfo, "powersync_dev")
    try:
        removed = writer.compact()
    finally:
        writer.close()
    ops = source_db.fetchall("SELECT op, object_id, data FROM powersync_dev.ops ORDER BY op_id")
    assert removed > 0
    # Ops 1-4 (all superseded) collapse into one CLEAR; the trailing REMOVE stays.
    assert [op[0] for op in ops] == ["CLEAR", "PUT", "REMOVE"]
    assert json.loads(ops[1][2])["title"] == "Keep 2"
    assert source_db.fetchall("SELECT bucket, checksum FROM powersync_dev.buckets") == before
    assert (
        source_db.fetchall("SELECT sum(checksum) % 4294967296 FROM powersync_dev.ops")[0][0]
        == op_sum
    )
    assert source_db.fetchall("SELECT count FROM powersync_dev.buckets")[0][0] == 3


def test_changed_sync_config_resnapshots_with_new_bucket_version(
    source_db: SourceDb, start_replicator
) -> None:
    source_db.insert_book(ALICE, "Dune")
    running = start_replicator()
    running.stop()
    text = BOOKS_CONFIG.replace("title,", "title, subtitle AS sub,", 1)
    running = start_replicator(rules=parse_sync_config(text))
    ops = source_db.ops()
    assert [op[1] for op in ops] == [bucket(ALICE, version=2)]
    assert ops[0][0] == 2, "op ids keep increasing across a reset"
