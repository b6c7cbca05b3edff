"""Reading-goal progress, computed on the device from what the reader did, never stored.

The same rules as the server's `papyrus.server.library.goals` (not imported: the client never
imports server code; a test compares the two on the same rows), so a device offline shows what
the server will: a goal counts, within its period (`period_start`
plus a year, a month or a week, in UTC; a month after January 31 ends on the last day of
February, as PostgreSQL's date arithmetic does):

* `books`: books whose `finished_at` falls in the period;
* `pages`: `pages_read` of reading sessions that started in the period;
* `minutes`: whole minutes of the closed reading sessions that started in the period (an open
  session has no length yet), summed before rounding down.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from papyrus.client.database import PowerSyncDatabase


@dataclass(frozen=True)
class GoalProgress:
    goal_id: str
    kind: str
    target: int
    period_start: date
    period_end: date  # exclusive
    done: int

    @property
    def fraction(self) -> float:
        """Share of the target reached, at most 1."""
        return min(self.done / self.target, 1.0) if self.target > 0 else 1.0

    @property
    def reached(self) -> bool:
        return self.done >= self.target


def period_end(start: date, period: str) -> date:
    """The first day after the period (PostgreSQL's `date + interval '1 month'`: the same day
    of the next month, or its last day when it has fewer)."""
    if period == "week":
        return start + timedelta(days=7)
    months = 12 if period == "year" else 1
    year, month = divmod(start.month - 1 + months, 12)
    year, month = start.year + year, month + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def goal_progress(database: PowerSyncDatabase, goal_id: str | None = None) -> list[GoalProgress]:
    """Progress of one goal (active or not), or of every active goal, ordered by period start."""
    if goal_id is not None:
        goals = database.get_all(
            "SELECT id, kind, target, period, period_start FROM reading_goals WHERE id = ?",
            (goal_id,),
        )
    else:
        goals = database.get_all(
            "SELECT id, kind, target, period, period_start FROM reading_goals"
            " WHERE COALESCE(active, 1) = 1"
        )
    if not goals:
        return []
    finished = [
        moment
        for (value,) in _tuples(database, "SELECT finished_at FROM books", 1)
        if (moment := _moment(value)) is not None
    ]
    sessions = [
        (started, _moment(ended), int(pages or 0))
        for started_at, ended, pages in _tuples(
            database, "SELECT started_at, ended_at, pages_read FROM reading_sessions", 3
        )
        if (started := _moment(started_at)) is not None
    ]
    out = []
    for goal in goals:
        try:
            start = date.fromisoformat(str(goal["period_start"]))
        except ValueError:
            continue
        end = period_end(start, str(goal["period"]))
        low = datetime.combine(start, time(), UTC)
        high = datetime.combine(end, time(), UTC)
        kind = str(goal["kind"])
        if kind == "books":
            done = sum(1 for moment in finished if low <= moment < high)
        elif kind == "pages":
            done = sum(pages for started, _, pages in sessions if low <= started < high)
        else:
            micros = sum(
                (ended - started) // timedelta(microseconds=1)
                for started, ended, _ in sessions
                if ended is not None and low <= started < high
            )
            done = micros // 60_000_000
        out.append(
            GoalProgress(str(goal["id"]), kind, int(goal["target"] or 0), start, end, int(done))
        )
    out.sort(key=lambda p: (p.period_start, p.goal_id))
    return out


def _tuples(database: PowerSyncDatabase, sql: str, width: int) -> list[tuple[Any, ...]]:
    return [tuple(row.values())[:width] for row in database.get_all(sql)]


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
