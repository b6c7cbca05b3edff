"""The sync contract: every synced table declared once, and the rules for writing its rows.

Imports nothing from the server, the client or SQLAlchemy. The server's models, upload
validation and SQL, the replicated tables, `sync-config.yaml`, the client's schema and its
write-time validation derive from these declarations or are checked against them by tests.
"""

from papyrus.contract.declare import (
    ID,
    OWNER,
    Before,
    Column,
    Index,
    JsonObject,
    Location,
    OnDelete,
    Stamp,
    StringList,
    Table,
    Type,
    Unique,
)
from papyrus.contract.tables import TABLES
from papyrus.contract.values import (
    DELETE,
    PATCH,
    PUT,
    FieldError,
    Problem,
    check_row_id,
    check_rules,
    check_value,
    from_local,
    to_local,
    validate_row,
)

TABLES_BY_NAME = {table.name: table for table in TABLES}


def table(name: str) -> Table:
    """The declaration of a synced table; KeyError for a name that is not one."""
    return TABLES_BY_NAME[name]


__all__ = [
    "DELETE",
    "ID",
    "OWNER",
    "PATCH",
    "PUT",
    "TABLES",
    "TABLES_BY_NAME",
    "Before",
    "Column",
    "FieldError",
    "Index",
    "JsonObject",
    "Location",
    "OnDelete",
    "Problem",
    "Stamp",
    "StringList",
    "Table",
    "Type",
    "Unique",
    "check_row_id",
    "check_rules",
    "check_value",
    "from_local",
    "table",
    "to_local",
    "validate_row",
]
