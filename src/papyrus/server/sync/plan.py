"""What one uploaded transaction means, decided in memory from the rows it touches.

The upload service loads, per table, the stored rows a transaction touches or references (and
their tombstones); everything here then decides without a database round trip:

* `collapse`: each row's final effect, applying its operations in upload order;
* `judge`: ownership, references, late writes to deleted rows, closed rows, immutable columns;
* `duplicates` and `cycles`: the declared unique keys and acyclic self-references, given the
  stored rows the service looked up for them.

Per-table behaviour comes from the declarations (`references`/`on_delete`, `id_from`,
`closed_by`, `immutable`, `unique`, `acyclic`), never from table names.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from papyrus import contract
from papyrus.contract import DELETE, PATCH, PUT, OnDelete, Type
from papyrus.server.sync.validation import Operation, Rejection

Key = tuple[str, str]  # (table name, canonical row id)

UNTOUCHED, PATCHED, REPLACED, DELETED = "untouched", "patched", "replaced", "deleted"


@dataclass
class RowPlan:
    """The final effect of a transaction's operations on one row."""

    table: contract.Table
    row_id: str
    state: str = UNTOUCHED
    values: dict[str, Any] = field(default_factory=dict)
    delete_first: bool = False  # replaced after a delete in the same transaction
    ops: list[Operation] = field(default_factory=list)
    skip: bool = False  # decided to change nothing (dropped, or a no-op on a closed row)
    dropped: bool = False  # a late write to a deleted row: as good as deleted

    @property
    def key(self) -> Key:
        return (self.table.name, self.row_id)

    @property
    def writes(self) -> bool:
        return not self.skip and self.state in (PATCHED, REPLACED)

    @property
    def deletes(self) -> bool:
        return not self.skip and (self.state == DELETED or self.delete_first)


@dataclass(frozen=True)
class Stored:
    """A stored row the transaction touches or references (`row`: all columns, when needed)."""

    owner: str
    row: dict[str, Any] | None = None


@dataclass
class Wanted:
    ids: set[str] = field(default_factory=set)  # load and lock
    fresh: set[str] = field(default_factory=set)  # only look for a tombstone


@dataclass
class Verdict:
    rejections: list[Rejection] = field(default_factory=list)
    dropped: list[Rejection] = field(default_factory=list)


def collapse(operations: Iterable[Operation]) -> dict[Key, RowPlan]:
    """Each row's final effect, applying its operations in upload order."""
    plans: dict[Key, RowPlan] = {}
    for op in operations:
        key = (op.table.name, op.row_id)
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = RowPlan(op.table, op.row_id)
        plan.ops.append(op)
        if op.kind == PUT:
            plan.delete_first = plan.delete_first or plan.state == DELETED
            plan.state, plan.values = REPLACED, dict(op.values)
        elif op.kind == PATCH:
            if plan.state == DELETED:
                continue  # patching a row this transaction deleted: nothing to update
            if plan.state == UNTOUCHED:
                plan.state = PATCHED
            plan.values.update(op.values)
        elif op.kind == DELETE:
            plan.state, plan.values, plan.delete_first = DELETED, {}, False
    return plans


def needs_row(table: contract.Table) -> bool:
    """Whether deciding about a stored row of this table needs its values, not only its owner."""
    return table.closed_by is not None or any(c.immutable for c in table.columns)


def wanted(plans: dict[Key, RowPlan], everything: bool = False) -> dict[str, Wanted]:
    """Per table, the rows to load and lock: every row touched or referenced, except rows a
    PUT writes whole (usually new ones). For those only a tombstone is looked up: no upserted
    row keeps a tombstone (`service._apply` removes it; a membership put back may keep one,
    but a PUT ignores those), so a tombstone means the row is absent, and the upsert's guard
    skips a stored row another user owns or whose values the declarations protect, after
    which the service decides again with `everything` loaded."""
    found: dict[str, Wanted] = defaultdict(Wanted)
    for (table_name, row_id), plan in plans.items():
        fresh = plan.state == REPLACED and not plan.delete_first
        (found[table_name].fresh if fresh and not everything else found[table_name].ids).add(row_id)
    for plan in plans.values():
        for column in plan.table.references:
            value = plan.values.get(column.name)
            if value is None or column.references is None:
                continue
            target = plans.get((column.references, value))
            if target is None or target.state != REPLACED:
                found[column.references].ids.add(value)
    return found


def forbidden(plans: dict[Key, RowPlan], stored: dict[Key, Stored], owner: str) -> list[Rejection]:
    """Every operation on a row owned by another user."""
    return [
        Rejection.of(op, "forbidden", "This id belongs to another user's row.")
        for key, plan in plans.items()
        if key in stored and stored[key].owner != owner
        for op in plan.ops
    ]


def judge(
    plans: dict[Key, RowPlan], stored: dict[Key, Stored], tombstones: set[Key], owner: str
) -> Verdict:
    """Rejections (the transaction cannot apply) and dropped late writes (it applies without
    them). Marks dropped and no-op plans `skip`, and clears references to deleted rows that are
    declared `SET_NULL`, as the delete did for every stored row pointing there."""
    verdict = Verdict()
    for key, plan in plans.items():
        if plan.state in (PATCHED, REPLACED) and _late(plan, key, stored, tombstones):
            _drop(plan, verdict, "row_deleted", "The row was deleted before this change arrived.")
    _check_references(plans, stored, tombstones, owner, verdict)
    for key, plan in plans.items():
        found = stored.get(key)
        if plan.skip or found is None or found.row is None:
            continue
        if plan.table.closed_by is not None and found.row.get(plan.table.closed_by) is not None:
            _check_closed(plan, found.row, plans, verdict)
        elif plan.state == REPLACED and not plan.delete_first:
            verdict.rejections += _immutable_changes(plan, found.row)
    verdict.dropped.sort(key=lambda r: (r.op_id is None, r.op_id or 0))  # upload order
    return verdict


def unique_candidates(
    plans: dict[Key, RowPlan], table: contract.Table, unique: contract.Unique
) -> list[dict[str, Any]]:
    """The key values this transaction writes (rows with every key column known and non-null)."""
    rows = []
    for plan in plans.values():
        if plan.table is table and plan.writes:
            values = [plan.values.get(c) for c in unique.columns]
            if all(name in plan.values for name in unique.columns) and None not in values:
                rows.append({"id": plan.row_id, **dict(zip(unique.columns, values, strict=True))})
    return rows


def duplicates(
    plans: dict[Key, RowPlan],
    table: contract.Table,
    unique: contract.Unique,
    written: dict[str, str],
    existing: dict[str, str],
) -> list[Rejection]:
    """Rejections for rows whose final key is shared. `written`: key of each row this
    transaction writes; `existing`: stored rows' keys matching one of them (both normalised by
    the database, so case folding is PostgreSQL's)."""
    holders: dict[str, set[str]] = defaultdict(set)
    for row_id, key in existing.items():
        plan = plans.get((table.name, row_id))
        if plan is not None and (plan.deletes or row_id in written):
            continue  # its stored key is gone or replaced by this transaction
        holders[key].add(row_id)
    for row_id, key in written.items():
        holders[key].add(row_id)
    rejections = []
    shown = ", ".join(unique.columns)
    for ids in holders.values():
        if len(ids) > 1:
            for row_id in sorted(ids):
                plan = plans.get((table.name, row_id))
                if plan is not None and row_id in written:
                    message = f"{shown}: another of your {table.name} rows already has this value."
                    rejections += _each_op(plan, "duplicate", message, columns=unique.columns)
    return rejections


def cycle_starts(plans: dict[Key, RowPlan], table: contract.Table) -> set[str]:
    """The parents this transaction points rows at: where the stored ancestry is looked up."""
    column = table.acyclic
    assert column is not None
    return {
        plan.values[column]
        for plan in plans.values()
        if plan.table is table and plan.writes and plan.values.get(column) is not None
    }


def cycles(
    plans: dict[Key, RowPlan], table: contract.Table, ancestry: dict[str, str | None]
) -> list[Rejection]:
    """Rejections for rows whose parent chain, after this transaction, leads back to them.
    `ancestry`: stored parent of every stored row reachable upwards from `cycle_starts`."""
    column = table.acyclic
    assert column is not None
    parent_of = dict(ancestry)
    changed = []
    for plan in plans.values():
        if plan.table is not table or plan.skip:
            continue
        if plan.state == DELETED:
            parent_of[plan.row_id] = None
        elif plan.writes and (plan.state == REPLACED or column in plan.values):
            parent_of[plan.row_id] = plan.values.get(column)
            if plan.values.get(column) is not None:
                changed.append(plan)
    rejections = []
    for plan in changed:
        node: str | None = plan.values[column]
        for _ in range(len(parent_of) + 1):
            if node is None or node == plan.row_id:
                break
            node = parent_of.get(node)
        if node == plan.row_id:
            message = f"{column}: would make this {table.name} row its own ancestor."
            rejections += _each_op(plan, "cycle", message, columns=(column,))
    return rejections


def same(column: contract.Column, stored: Any, value: Any) -> bool:
    """Whether a stored value (as `to_jsonb` renders it) equals a normalised uploaded value."""
    if stored is None or value is None:
        return stored is None and value is None
    if column.type is Type.TIMESTAMP:
        return datetime.fromisoformat(stored) == datetime.fromisoformat(value)
    if column.type is Type.REAL:
        return float(stored) == float(value)
    return bool(stored == value)


# --- helpers -------------------------------------------------------------------------------------


def _late(plan: RowPlan, key: Key, stored: dict[Key, Stored], tombstones: set[Key]) -> bool:
    """A write to a row deleted before it arrived. Ids derived from a pair come back by design
    (a book put back on a shelf), so only a PATCH of a removed membership is late."""
    if key in stored or key not in tombstones or plan.delete_first:
        return False
    return plan.state == PATCHED or not plan.table.ids_reused


def _check_references(
    plans: dict[Key, RowPlan],
    stored: dict[Key, Stored],
    tombstones: set[Key],
    owner: str,
    verdict: Verdict,
) -> None:
    """Each written reference must name a row of the uploader's: stored, or written by this
    transaction. Repeated until stable, because a dropped row drops the rows pointing at it."""
    reported: set[tuple[Key, str]] = set()
    changed = True
    while changed:
        changed = False
        for plan in plans.values():
            if not plan.writes:
                continue
            for column in plan.table.references:
                value = plan.values.get(column.name)
                if value is None or column.references is None:
                    continue
                target = (column.references, value)
                status = _target_status(target, plans, stored, tombstones, owner)
                if status == "ok":
                    continue
                if status == "invalid":
                    if (plan.key, column.name) not in reported:
                        reported.add((plan.key, column.name))
                        verdict.rejections += _each_op(
                            plan,
                            "invalid_reference",
                            f"{column.name}: no such {column.references} row of yours.",
                            columns=(column.name,),
                            value=value,
                        )
                    continue
                if column.on_delete is OnDelete.SET_NULL:
                    plan.values[column.name] = None
                else:
                    _drop(
                        plan,
                        verdict,
                        "parent_deleted",
                        f"{column.name}: the {column.references} row was deleted.",
                    )
                changed = True
                break


def _target_status(
    target: Key,
    plans: dict[Key, RowPlan],
    stored: dict[Key, Stored],
    tombstones: set[Key],
    owner: str,
) -> str:
    plan = plans.get(target)
    if plan is not None:
        if plan.state == DELETED or plan.dropped:
            return "gone"
        if plan.state == REPLACED:
            return "ok"
    found = stored.get(target)
    if found is not None:
        return "ok" if found.owner == owner else "invalid"
    return "gone" if target in tombstones else "invalid"


def _check_closed(
    plan: RowPlan, row: dict[str, Any], plans: dict[Key, RowPlan], verdict: Verdict
) -> None:
    """A closed row is history: clients cannot change or delete it. Deleting it with its
    parent is the cascade (a client that deletes children itself uploads both); a write
    that changes nothing (a replay) is a no-op."""
    if plan.state == DELETED or plan.delete_first:
        for column in plan.table.references:
            parent = plans.get((column.references or "", row.get(column.name) or ""))
            if column.on_delete is OnDelete.CASCADE and parent is not None and parent.deletes:
                return
        message = f"{plan.table.name} rows are history once {plan.table.closed_by} is set."
        verdict.rejections += [
            Rejection.of(op, "closed", message) for op in plan.ops if op.kind == DELETE
        ]
        return
    # A PUT sets every column (left out means null); a PATCH only the ones it names.
    columns = (
        plan.table.writable_columns
        if plan.state == REPLACED
        else [plan.table.column(name) for name in plan.values]
    )
    if all(same(c, row.get(c.name), plan.values.get(c.name)) for c in columns):
        plan.skip = True
        return
    message = f"{plan.table.name} rows are history once {plan.table.closed_by} is set."
    verdict.rejections += _each_op(plan, "closed", message)


def _immutable_changes(plan: RowPlan, row: dict[str, Any]) -> list[Rejection]:
    """A PUT over a stored row keeps what was declared immutable (PATCH cannot name it)."""
    rejections = []
    for column in plan.table.columns:
        if not column.immutable or column.name not in plan.values:
            continue
        if not same(column, row.get(column.name), plan.values[column.name]):
            message = f"{column.name}: cannot change once set."
            rejections += _each_op(plan, "immutable_field", message, columns=(column.name,))
    return rejections


def _drop(plan: RowPlan, verdict: Verdict, code: str, message: str) -> None:
    plan.skip = plan.dropped = True
    verdict.dropped += [Rejection.of(op, code, message) for op in plan.ops if op.kind != DELETE]


def _each_op(
    plan: RowPlan,
    code: str,
    message: str,
    columns: tuple[str, ...] = (),
    value: Any = None,
) -> list[Rejection]:
    """One rejection per PUT/PATCH of the plan (those that set `columns`, when given)."""
    chosen = [
        op
        for op in plan.ops
        if op.kind != DELETE
        and all(c in op.values and (value is None or op.values[c] == value) for c in columns)
    ]
    return [Rejection.of(op, code, message) for op in chosen or plan.ops[-1:]]
