"""The upload queue as the app sees it: CrudEntry, CrudBatch, CrudTransaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from papyrus.client._core import CrudRow


class UpdateType(StrEnum):
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"


@dataclass(frozen=True)
class CrudEntry:
    """One queued local change. `client_id` is its position in the queue."""

    client_id: int
    op: UpdateType
    table: str
    id: str
    transaction_id: int | None = None
    op_data: dict[str, Any] | None = None
    previous_values: dict[str, Any] | None = None
    metadata: str | None = None

    @classmethod
    def from_row(cls, row: CrudRow) -> CrudEntry:
        data = row.data
        return cls(
            client_id=row.id,
            op=UpdateType(data["op"]),
            table=data["type"],
            id=data["id"],
            transaction_id=row.tx_id,
            op_data=data.get("data"),
            previous_values=data.get("old"),
            metadata=data.get("metadata"),
        )

    def to_json(self) -> dict[str, Any]:
        """The wire form `@powersync/node` produces: unset optional fields are left out."""
        out: dict[str, Any] = {
            "op_id": self.client_id,
            "op": str(self.op),
            "type": self.table,
            "id": self.id,
            "tx_id": self.transaction_id,
        }
        if self.op_data is not None:
            out["data"] = self.op_data
        if self.previous_values is not None:
            out["old"] = self.previous_values
        if self.metadata is not None:
            out["metadata"] = self.metadata
        return out


@dataclass
class CrudBatch:
    """Queued entries handed to `upload_data`; call `complete()` only once the server has
    accepted (or permanently rejected) them, which removes them from the queue."""

    crud: list[CrudEntry]
    have_more: bool
    _complete: Callable[[], None] = field(repr=False)

    def complete(self) -> None:
        self._complete()


@dataclass
class CrudTransaction(CrudBatch):
    """All entries written by one local transaction, uploaded and completed together."""

    transaction_id: int | None = None
