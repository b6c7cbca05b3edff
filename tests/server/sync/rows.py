"""Valid rows for any synced table, made from its declaration, so a new table is covered by the
generic tests without new test code.

`chain(table)` gives a row of that table together with the rows it references (every reference
column filled, parents first), each as an upload entry would carry it. `variant` picks a second
valid value, for PATCH tests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from papyrus import contract
from papyrus.contract import JsonObject, Location, StringList, Table, Type

# A valid example of every declared pattern; a new pattern needs one here (the tests say so).
PATTERN_EXAMPLES = {r"#[0-9a-fA-F]{6}": ("#a0b1c2", "#00FF7f")}


@dataclass
class Row:
    table: Table
    id: str
    data: dict[str, Any] = field(default_factory=dict)

    def entry(self, op: str = "PUT", data: dict[str, Any] | None = None, **extra: Any) -> dict:
        item: dict[str, Any] = {"op": op, "type": self.table.name, "id": self.id, "op_id": 1}
        item["tx_id"] = 7
        if op != "DELETE":
            item["data"] = self.data if data is None else data
        return {**item, **extra}


def value(column: contract.Column, variant: int = 0) -> Any:
    """A valid, normalised value of `column` that is not a reference (variants differ)."""
    if column.type is Type.TEXT:
        if column.choices:
            return column.choices[variant % len(column.choices)]
        if column.pattern is not None:
            if column.pattern not in PATTERN_EXAMPLES:
                raise AssertionError(f"add an example of {column.pattern!r} to PATTERN_EXAMPLES")
            return PATTERN_EXAMPLES[column.pattern][variant % 2]
        low, high = column.length or (0, 0)
        text = f"{column.name} {variant} é"[:high]
        return text + "x" * max(0, low - len(text))
    if column.type is Type.INTEGER:
        low, high = column.range or (0, 2**31 - 1)
        return int(max(low, min(high, 3 + variant)))
    if column.type is Type.REAL:
        low, high = column.range or (0.0, 1.0)
        return low + (high - low) * (0.25 if variant == 0 else 0.75)
    if column.type is Type.BOOLEAN:
        return variant % 2 == 0
    if column.type is Type.TIMESTAMP:
        # Columns declared later get later times, so `Before` rules hold in declaration order.
        hour = 10 + variant
        return f"2026-01-{1 + _position(column):02d}T{hour:02d}:30:00+00:00"
    if column.type is Type.DATE:
        return f"2026-0{1 + variant}-01"
    if column.type is Type.JSON:
        shape = column.json
        if isinstance(shape, StringList):
            return ["Ann", f"Bo {variant}"]
        if isinstance(shape, JsonObject):
            return {"k": [variant, "é"], "nested": {"ok": True}}
        assert isinstance(shape, Location)
        return {"cfi": f"epubcfi(/6/{4 + variant})", "page": 3 + variant, "fraction": 0.5}
    raise AssertionError(f"no example for {column.type}")


def chain(
    table: Table | str, variant: int = 0, root: bool = False, closed: bool = False
) -> list[Row]:
    """A full valid row of `table` (every column set), after the rows it references. A `root`
    row leaves its self-references empty; the `closed_by` column is set only when `closed`."""
    if isinstance(table, str):
        table = contract.table(table)
    rows: list[Row] = []
    data: dict[str, Any] = {}
    for column in table.columns:
        if column.server_set or (column.name == table.closed_by and not closed):
            continue
        if column.references is None:
            data[column.name] = value(column, variant)
        elif column.references == table.name:
            if not root:
                parents = chain(table, variant, root=True)
                rows += parents
                data[column.name] = parents[-1].id
        else:
            parents = chain(column.references, variant)
            rows += parents
            data[column.name] = parents[-1].id
    row_id = table.derived_id(data) or str(uuid.uuid4())
    _, problems = contract.validate_row(table, contract.PUT, row_id, data)
    assert problems == [], problems
    rows.append(Row(table, row_id, data))
    return rows


def one_of_each() -> list[Row]:
    """One full valid row of every synced table, in declaration order (a table references only
    tables before it), each referencing the row made for the table it references (no second
    parent, so no per-user uniqueness rule trips) and leaving self-references empty."""
    made: dict[str, Row] = {}
    for table in contract.TABLES:
        data: dict[str, Any] = {}
        for column in table.columns:
            if column.server_set or column.name == table.closed_by:
                continue
            if column.references is None:
                data[column.name] = value(column)
            elif column.references != table.name:
                data[column.name] = made[column.references].id
        row_id = table.derived_id(data) or str(uuid.uuid4())
        _, problems = contract.validate_row(table, contract.PUT, row_id, data)
        assert problems == [], problems
        made[table.name] = Row(table, row_id, data)
    return list(made.values())


def patchable(table: Table) -> contract.Column | None:
    """A column a PATCH may change (not immutable, not a reference, not the server's)."""
    for column in table.columns:
        fixed = column.immutable or column.server_set or column.references or column.required
        if not fixed and column.name != table.closed_by:
            return column
    for column in table.columns:
        if not (column.immutable or column.server_set or column.references):
            return column
    return None


def _position(column: contract.Column) -> int:
    for table in contract.TABLES:
        for index, declared in enumerate(table.columns):
            if declared is column:
                return index
    return 0
