"""Goal progress is computed from finished books and reading sessions, inside the goal's period."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any

from fastapi.testclient import TestClient

from papyrus.server.db import create_engine, session_factory
from papyrus.server.library.goals import GoalProgress, goal_progress
from tests.server.sync.conftest import Reader, entry, new_id, transaction, upload


def put(table: str, data: dict[str, Any]) -> dict[str, Any]:
    return entry("PUT", new_id(), data, type=table)


def progress(database_url: str, user_id: str, goal_id: str | None = None) -> list[GoalProgress]:
    async def run() -> list[GoalProgress]:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as db:
                return await goal_progress(
                    db, uuid.UUID(user_id), uuid.UUID(goal_id) if goal_id else None
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def session(book: str, start: str, end: str | None, pages: int | None) -> dict[str, Any]:
    return put(
        "reading_sessions",
        {"book_id": book, "started_at": start, "ended_at": end, "pages_read": pages},
    )


def test_progress_counts_only_what_falls_in_the_period(
    client: TestClient, alice: Reader, bob: Reader, database_url: str
) -> None:
    books_goal, pages_goal, minutes_goal, old_goal = new_id(), new_id(), new_id(), new_id()
    book, other = new_id(), new_id()
    body = transaction(
        entry("PUT", book, {"title": "In", "finished_at": "2026-03-31T23:59:00Z"}),
        entry("PUT", other, {"title": "Before", "finished_at": "2026-02-28T23:59:59Z"}),
        put("books", {"title": "After", "finished_at": "2026-04-01T00:00:00Z"}),
        put("books", {"title": "Reading", "finished_at": None}),
        session(book, "2026-03-01T00:00:00Z", "2026-03-01T00:45:30Z", 40),
        session(book, "2026-03-10T10:00:00+02:00", "2026-03-10T11:00:00+02:00", 30),
        session(book, "2026-03-20T10:00:00Z", None, 5),  # open: pages count, minutes not yet
        session(book, "2026-04-01T00:00:00Z", "2026-04-01T05:00:00Z", 500),  # next month
        entry(
            "PUT",
            books_goal,
            {"kind": "books", "target": 2, "period": "month", "period_start": "2026-03-01"},
            type="reading_goals",
        ),
        entry(
            "PUT",
            pages_goal,
            {"kind": "pages", "target": 50, "period": "month", "period_start": "2026-03-01"},
            type="reading_goals",
        ),
        entry(
            "PUT",
            minutes_goal,
            {"kind": "minutes", "target": 60, "period": "week", "period_start": "2026-03-09"},
            type="reading_goals",
        ),
        entry(
            "PUT",
            old_goal,
            {
                "kind": "books",
                "target": 1,
                "period": "year",
                "period_start": "2025-01-01",
                "active": False,
            },
            type="reading_goals",
        ),
    )
    assert upload(client, alice, body).json()["status"] == "applied"
    # Another reader's activity never counts.
    bobs_book = new_id()
    upload(
        client,
        bob,
        transaction(
            entry("PUT", bobs_book, {"title": "B", "finished_at": "2026-03-05T00:00:00Z"}),
            session(bobs_book, "2026-03-10T10:00:00Z", "2026-03-10T20:00:00Z", 999),
        ),
    )

    found = {str(p.goal_id): p for p in progress(database_url, alice.user_id)}
    assert set(found) == {books_goal, pages_goal, minutes_goal}, "inactive goals are left out"
    books = found[books_goal]
    assert (books.done, books.period_end, books.reached) == (1, date(2026, 4, 1), False)
    assert books.fraction == 0.5
    pages = found[pages_goal]
    assert (pages.done, pages.reached, pages.fraction) == (75, True, 1.0)
    minutes = found[minutes_goal]  # the week from 9 March: only the 60-minute session
    assert (minutes.done, minutes.period_end) == (60, date(2026, 3, 16))

    [old] = progress(database_url, alice.user_id, old_goal)
    assert (old.done, old.period_end) == (0, date(2026, 1, 1))
    assert progress(database_url, bob.user_id, books_goal) == []


def test_minutes_add_up_across_sessions(
    client: TestClient, alice: Reader, database_url: str
) -> None:
    book, goal = new_id(), new_id()
    upload(
        client,
        alice,
        transaction(
            entry("PUT", book, {"title": "T"}),
            session(book, "2026-01-01T10:00:00Z", "2026-01-01T10:20:30Z", None),
            session(book, "2026-01-02T10:00:00Z", "2026-01-02T10:39:45Z", None),
            entry(
                "PUT",
                goal,
                {"kind": "minutes", "target": 600, "period": "year", "period_start": "2026-01-01"},
                type="reading_goals",
            ),
        ),
    )
    [result] = progress(database_url, alice.user_id)
    assert result.done == 60  # 20.5 + 39.75 minutes, floored once over the sum


PROGRESS = "/v1/library/goals/progress"


def goal(kind: str, target: int, period: str, start: str, active: bool = True) -> dict[str, Any]:
    return put(
        "reading_goals",
        {"kind": kind, "target": target, "period": period, "period_start": start, "active": active},
    )


def test_the_progress_endpoint_answers_each_reader_for_their_active_goals(
    client: TestClient, alice: Reader, bob: Reader, database_url: str
) -> None:
    book = new_id()
    month, week, put_aside = (
        goal("books", 2, "month", "2026-03-01"),
        goal("minutes", 30, "week", "2026-03-09"),
        goal("books", 1, "year", "2026-01-01", active=False),
    )
    body = transaction(
        entry("PUT", book, {"title": "In", "finished_at": "2026-03-31T23:59:00Z"}),
        session(book, "2026-03-10T10:00:00Z", "2026-03-10T10:45:00Z", 12),
        month,
        week,
        put_aside,
    )
    assert upload(client, alice, body).json()["status"] == "applied"
    theirs = goal("books", 1, "month", "2026-03-01")
    bobs_book = new_id()
    body = transaction(
        entry("PUT", bobs_book, {"title": "B", "finished_at": "2026-03-05T00:00:00Z"}), theirs
    )
    assert upload(client, bob, body).json()["status"] == "applied"

    response = client.get(PROGRESS, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "goals": [
            {
                "goal_id": month["id"],
                "kind": "books",
                "target": 2,
                "period_start": "2026-03-01",
                "period_end": "2026-04-01",
                "done": 1,
                "fraction": 0.5,
                "reached": False,
            },
            {
                "goal_id": week["id"],
                "kind": "minutes",
                "target": 30,
                "period_start": "2026-03-09",
                "period_end": "2026-03-16",
                "done": 45,
                "fraction": 1.0,
                "reached": True,
            },
        ]
    }
    # The same numbers as the reference the devices' own counts are compared against.
    reference = progress(database_url, alice.user_id)
    assert [(str(p.goal_id), p.done) for p in reference] == [
        (g["goal_id"], g["done"]) for g in response.json()["goals"]
    ]
    [bobs] = client.get(PROGRESS, headers=bob.headers).json()["goals"]
    assert (bobs["goal_id"], bobs["done"], bobs["reached"]) == (theirs["id"], 1, True)


def test_the_progress_endpoint_refuses_without_a_valid_session(
    client: TestClient, alice: Reader
) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = client.get(PROGRESS, headers=headers)
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"code", "message", "details"}
    response = client.post(PROGRESS, headers=alice.headers)
    assert response.status_code == 405 and response.headers["allow"].startswith("GET")
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert client.get(PROGRESS, headers=alice.headers).status_code == 200
    client.post("/v1/auth/logout", headers=alice.headers)
    response = client.get(PROGRESS, headers=alice.headers)
    assert response.status_code == 401 and "error" in response.json()
