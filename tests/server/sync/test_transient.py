"""Only transient database trouble answers 5xx (the client retries); nothing is half-applied."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError, OperationalError

from tests.server.sync.conftest import Reader, count_books, entry, new_id, transaction, upload


class _Deadlock(psycopg.errors.DeadlockDetected):
    pass


@pytest.mark.parametrize(
    "failure",
    [
        OperationalError("SELECT", {}, psycopg.OperationalError("connection refused")),
        DBAPIError("UPDATE", {}, _Deadlock("deadlock detected")),
    ],
    ids=["database-down", "deadlock"],
)
def test_transient_database_failure_is_503_and_applies_nothing(
    client: TestClient, alice: Reader, sql, monkeypatch, failure: Exception
) -> None:
    from papyrus.server.sync import service

    real_apply = service._apply

    async def fail_midway(db, user_id, plans):
        await real_apply(db, user_id, plans)  # the writes happen, then the database fails
        raise failure

    monkeypatch.setattr(service, "_apply", fail_midway)
    body = transaction(entry("PUT", new_id(), {"title": "T"}))
    response = upload(client, alice, body)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response.headers["retry-after"] == "5"
    assert count_books(sql) == 0
    assert sql("SELECT count(*) FROM sync_rejections")[0][0] == 0

    monkeypatch.setattr(service, "_apply", real_apply)
    assert upload(client, alice, body).json() == {"status": "applied", "applied": 1}
    assert count_books(sql) == 1


def test_a_write_the_database_refuses_is_rejected_not_retried_forever(
    client: TestClient, alice: Reader, sql, monkeypatch
) -> None:
    """Defence in depth: should validation ever miss a constraint, the queue still moves on."""
    from papyrus import contract

    real_validate_row = contract.validate_row

    def misses_the_rating_rule(table, op, row_id, data, owner=None):
        values, _ = real_validate_row(table, op, row_id, {**data, "rating": 3}, owner)
        return {**values, "rating": data["rating"]}, []

    monkeypatch.setattr(contract, "validate_row", misses_the_rating_rule)
    response = upload(
        client, alice, transaction(entry("PUT", new_id(), {"title": "T", "rating": 9}))
    )
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "rejected"
    assert result["rejections"][0]["code"] == "constraint_violation"
    assert count_books(sql) == 0
