"""Development sync service: the PowerSync protocol over this project's PostgreSQL.

Real PowerSync SDKs connect to it as to the PowerSync service. Not meant for production scale.
"""

from papyrus.devsync.config import Settings
from papyrus.devsync.service import DevSyncService, create_app, serve
from papyrus.devsync.sync_rules import SyncConfigError, load_sync_config

__all__ = [
    "DevSyncService",
    "Settings",
    "SyncConfigError",
    "create_app",
    "load_sync_config",
    "serve",
]
