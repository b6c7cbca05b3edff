"""HTTP routes of the reading library's computed reads (nothing here is synced)."""

from __future__ import annotations

import uuid
from datetime import date

from fastapi import APIRouter
from pydantic import BaseModel, Field

from papyrus.server.accounts.dependencies import CallerDep, DbDep
from papyrus.server.errors import ErrorResponse
from papyrus.server.library.goals import goal_progress

router = APIRouter(prefix="/library", tags=["library"], responses={401: {"model": ErrorResponse}})


class GoalProgressPublic(BaseModel):
    goal_id: uuid.UUID
    kind: str
    target: int
    period_start: date
    period_end: date = Field(description="The first day after the period.")
    done: int = Field(description="Books finished, pages read or minutes read in the period.")
    fraction: float = Field(description="Share of the target reached, at most 1.")
    reached: bool


class GoalProgressList(BaseModel):
    goals: list[GoalProgressPublic]


@router.get("/goals/progress")
async def list_goal_progress(caller: CallerDep, db: DbDep) -> GoalProgressList:
    """Progress of each of the caller's active reading goals, ordered by period start: the
    server's count, which every device's own count (computed offline) converges on."""
    found = await goal_progress(db, caller.user_id)
    return GoalProgressList(
        goals=[
            GoalProgressPublic(
                goal_id=p.goal_id,
                kind=p.kind,
                target=p.target,
                period_start=p.period_start,
                period_end=p.period_end,
                done=p.done,
                fraction=p.fraction,
                reached=p.reached,
            )
            for p in found
        ]
    )
