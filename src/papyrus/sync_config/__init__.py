"""The sync config: which rows each user's devices receive.

One committed file, shipped as package data so an installed server or development sync
service finds it without this repository's checkout. The PowerSync service reads the same file
(docker-compose.yml mounts it); the development sync service reads it by default.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["sync_config_path"]


def sync_config_path() -> Path:
    """The `sync-config.yaml` of this installation."""
    return Path(__file__).with_name("sync-config.yaml")
