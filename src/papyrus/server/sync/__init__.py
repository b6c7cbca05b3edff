"""The sync write path: synced tables, PowerSync uploads applied atomically, rejections."""
