"""Reading-goal progress, computed from what the reader did rather than stored by clients.

A goal counts, within its period (`period_start` plus a year, a month or a week, in UTC):

* `books`: books whose `finished_at` falls in the period;
* `pages`: `pages_read` of reading sessions that started in the period;
* `minutes`: whole minutes of the closed reading sessions that started in the period (an open
  session has no length yet).

Nothing here is synced: two devices that counted differently offline could never agree on a
stored number, while these sums converge with the rows they are computed from. This is the
reference: `GET /v1/library/goals/progress` answers it, and the client's offline count
(`papyrus.client.goals`, the same rules in Python) is tested against that answer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_PROGRESS = text(
    """
    WITH g AS (
        SELECT id, owner_user_id, kind, target, period, period_start,
               (period_start::timestamp AT TIME ZONE 'UTC') AS starts,
               ((period_start + CASE period WHEN 'year' THEN interval '1 year'
                                            WHEN 'month' THEN interval '1 month'
                                            ELSE interval '7 days' END)::timestamp
                AT TIME ZONE 'UTC') AS ends
        FROM reading_goals
        WHERE owner_user_id = :owner AND (CAST(:goal_id AS uuid) IS NULL OR id = :goal_id)
          AND (active OR CAST(:goal_id AS uuid) IS NOT NULL))
    SELECT g.id, g.kind, g.target, g.period_start, (g.ends AT TIME ZONE 'UTC')::date AS period_end,
        CASE g.kind
        WHEN 'books' THEN (
            SELECT count(*) FROM books AS b
            WHERE b.owner_user_id = g.owner_user_id
              AND b.finished_at >= g.starts AND b.finished_at < g.ends)
        WHEN 'pages' THEN (
            SELECT coalesce(sum(s.pages_read), 0) FROM reading_sessions AS s
            WHERE s.owner_user_id = g.owner_user_id
              AND s.started_at >= g.starts AND s.started_at < g.ends)
        ELSE (
            SELECT coalesce(floor(sum(extract(epoch FROM s.ended_at - s.started_at)) / 60), 0)
            FROM reading_sessions AS s
            WHERE s.owner_user_id = g.owner_user_id AND s.ended_at IS NOT NULL
              AND s.started_at >= g.starts AND s.started_at < g.ends)
        END AS done
    FROM g ORDER BY g.period_start, g.id
    """
)


@dataclass(frozen=True)
class GoalProgress:
    goal_id: uuid.UUID
    kind: str
    target: int
    period_start: date
    period_end: date  # exclusive
    done: int

    @property
    def fraction(self) -> float:
        """Share of the target reached, at most 1."""
        return min(self.done / self.target, 1.0)

    @property
    def reached(self) -> bool:
        return self.done >= self.target


async def goal_progress(
    db: AsyncSession, user_id: uuid.UUID, goal_id: uuid.UUID | None = None
) -> list[GoalProgress]:
    """Progress of one goal of the user (active or not), or of all their active goals."""
    result = await db.execute(_PROGRESS, {"owner": user_id, "goal_id": goal_id})
    return [
        GoalProgress(row.id, row.kind, row.target, row.period_start, row.period_end, int(row.done))
        for row in result
    ]
