"""Checksums, subkeys and value formats against lines recorded from the real service."""

from __future__ import annotations

import json
import subprocess

import pytest

from papyrus.devsync.checksums import add_checksums, put_checksum, remove_checksum, to_signed
from papyrus.devsync.values import decode_value, js_number, row_json, row_subkey
from tests.e2e.node_client import NODE_SDK

from .conftest import CAPTURES

SOURCE_TABLE = "e35d5da5-daf1-43b1-861b-6a9c8845afd2"
DUNE = (
    '{"id":"aaaaaaaa-0000-4000-8000-000000000001",'
    '"owner_user_id":"11111111-1111-4111-8111-111111111111","title":"Dune"}'
)


def capture_lines(name: str) -> list[dict]:
    path = CAPTURES / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_put_checksum_matches_capture() -> None:
    assert put_checksum("books", "aaaaaaaa-0000-4000-8000-000000000001", DUNE) == 3144581252


def test_bucket_checksum_of_the_two_initial_ops() -> None:
    emma = DUNE.replace("0001", "0002").replace("Dune", "Emma")
    total = add_checksums(
        put_checksum("books", "aaaaaaaa-0000-4000-8000-000000000001", DUNE),
        put_checksum("books", "aaaaaaaa-0000-4000-8000-000000000002", emma),
    )
    assert to_signed(total) == -578048927


def test_subkey_is_table_id_and_uuid5_of_the_replica_identity() -> None:
    # The capture's table had its key column named book_id.
    subkey = row_subkey(SOURCE_TABLE, {"book_id": "aaaaaaaa-0000-4000-8000-000000000002"})
    assert subkey == f"{SOURCE_TABLE}/6098ac49-b4cd-52a7-a88d-cdb1c81fb2ab"
    assert remove_checksum(subkey) == 1023059321


@pytest.mark.parametrize("name", ["ndjson-initial-with-headers.txt", "ndjson-live-changes.txt"])
def test_every_captured_op_and_bucket_checksum(name: str) -> None:
    """Recompute each op's checksum and each checkpoint's running bucket sum."""
    totals: dict[str, int] = {}
    expected: dict[str, int] = {}
    checked = completed = 0
    for line in capture_lines(name):
        if "checkpoint" in line:
            for b in line["checkpoint"]["buckets"]:
                expected[b["bucket"]] = b["checksum"]
        elif "checkpoint_diff" in line:
            for b in line["checkpoint_diff"]["updated_buckets"]:
                expected[b["bucket"]] = b["checksum"]
        elif "data" in line:
            bucket = line["data"]["bucket"]
            for op in line["data"]["data"]:
                if op["op"] == "PUT":
                    value = put_checksum(op["object_type"], op["object_id"], op["data"])
                else:
                    value = remove_checksum(op["subkey"])
                assert value == op["checksum"], op
                totals[bucket] = add_checksums(totals.get(bucket, 0), value)
                checked += 1
        elif "checkpoint_complete" in line:
            assert {b: to_signed(v) for b, v in totals.items()} == expected
            completed += 1
    assert checked >= 2 and completed >= 1


def test_js_number_formatting() -> None:
    assert js_number(1.0) == "1"
    assert js_number(0.1) == "0.1"
    assert js_number(1e-7) == "1e-7"
    assert js_number(0.00001) == "0.00001"
    assert js_number(1e21) == "1e+21"
    assert js_number(1.2345678901234567e19) == "12345678901234567000"
    assert row_json({"a": 2.5e-5, "b": 3, "c": None}) == '{"a":0.000025,"b":3,"c":null}'


def test_a_real_keeps_its_type_in_row_data() -> None:
    """An integral REAL is `1.0` in the data text (the real service's JSONBig), an INTEGER `1`;
    the op checksum hashes that text, so `1` would give another checksum than the service's."""
    position = decode_value("1", 701)
    assert isinstance(position, float)
    assert row_json({"n": 1, "position": position}) == '{"n":1,"position":1.0}'
    assert row_json({"a": decode_value("0", 701), "b": -0.0, "c": 1e20, "d": 1e16}) == (
        '{"a":0.0,"b":0.0,"c":100000000000000000000.0,"d":10000000000000000.0}'
    )
    assert row_json({"a": 1e21, "b": 1e-7, "c": 0.25}) == '{"a":1e+21,"b":1e-7,"c":0.25}'


# float8 text forms as PostgreSQL sends them in replication (extra_float_digits defaults to 1).
FLOAT8_TEXTS = [
    "1", "0", "-0", "-3", "100000", "0.25", "0.30000000000000004", "1e-07", "2.5e-05",
    "0.0001", "1e+15", "1e+16", "1e+20", "1.2345678901234567e+19", "9007199254740993", "1e+21",
    "-1.5e+300", "5e-324",
]  # fmt: skip


@pytest.mark.node
def test_row_data_text_is_the_service_jsonbig_text_for_every_float8() -> None:
    """Each float8 decoded as the service decodes it (`Number(text)`) and written by its own
    `JSONBig.stringify` (@powersync/service-jsonbig, pinned in node-sdk/) equals our row text."""
    script = (
        "const { JSONBig } = await import('@powersync/service-jsonbig');"
        "const texts = JSON.parse(process.argv[1]);"
        "console.log(JSON.stringify(texts.map((t) => JSONBig.stringify({ v: Number(t) }))));"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script, json.dumps(FLOAT8_TEXTS)],
        capture_output=True,
        text=True,
        cwd=NODE_SDK,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout)
    ours = [row_json({"v": decode_value(text, 701)}) for text in FLOAT8_TEXTS]
    assert ours == theirs


def test_postgres_values_to_sync_values() -> None:
    assert decode_value("t", 16) == 1
    assert decode_value("f", 16) == 0
    assert decode_value("42", 21) == 42
    assert decode_value("0.5", 701) == 0.5
    assert decode_value("12.50", 1700) == "12.50"  # numeric stays text, as in the service
    assert decode_value('{"a": 1}', 3802) == '{"a": 1}'
    # Edition 2 (timestamps_iso8601): UTC, 'T', always 6 fractional digits.
    assert decode_value("2026-11-26 14:39:09.12+00", 1184) == "2026-11-26T14:39:09.120000Z"
    assert decode_value("2026-11-26 16:39:09+02", 1184) == "2026-11-26T14:39:09.000000Z"
    assert decode_value("2026-11-26 14:39:09", 1114) == "2026-11-26T14:39:09.000000"
    assert decode_value("infinity", 1184) == "9999-12-31T23:59:59.000000Z"
    assert decode_value("2026-11-26", 1082) == "2026-11-26"
