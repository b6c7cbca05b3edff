"""The reading library's server-side reads that are computed, never synced (goal progress)."""
