"""Development sync service: the PowerSync protocol over this project's PostgreSQL.

Real PowerSync SDKs connect to it as to the PowerSync service. Not meant for production scale.

The names below load on first use, so `papyrus` commands that never run the service (the
client's) do not pay for importing it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from papyrus.devsync.config import Settings
    from papyrus.devsync.service import DevSyncService, create_app, serve
    from papyrus.devsync.sync_rules import SyncConfigError, load_sync_config

_WHERE = {
    "DevSyncService": "papyrus.devsync.service",
    "Settings": "papyrus.devsync.config",
    "SyncConfigError": "papyrus.devsync.sync_rules",
    "create_app": "papyrus.devsync.service",
    "load_sync_config": "papyrus.devsync.sync_rules",
    "serve": "papyrus.devsync.service",
}

__all__ = [
    "DevSyncService",
    "Settings",
    "SyncConfigError",
    "create_app",
    "load_sync_config",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'papyrus.devsync' has no attribute {name!r}")
