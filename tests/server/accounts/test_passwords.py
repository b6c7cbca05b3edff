"""Argon2 runs in a bounded, lower-priority pool: a login storm queues instead of piling up."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from papyrus.server.accounts import passwords


class _Tracking:
    """Stands in for the hasher to observe how many hashes run at once, and where."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.niceness: set[int] = set()

    def verify(self, password_hash: str, password: str) -> bool:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.niceness.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        time.sleep(0.02)  # long enough for the others to pile up if they could
        with self.lock:
            self.running -= 1
        return True


def test_concurrent_hashing_is_bounded_by_the_cores(monkeypatch) -> None:
    """One hashing thread per core but one: the event loop keeps a core during a storm."""
    tracking = _Tracking()
    monkeypatch.setattr(passwords, "_hasher", tracking)
    storm = 4 * passwords.HASHING_THREADS + 4

    async def main() -> list[bool]:
        return await asyncio.gather(
            *(passwords.verify_password("hash", "password") for _ in range(storm))
        )

    assert asyncio.run(main()) == [True] * storm
    cores = len(os.sched_getaffinity(0))
    assert tracking.peak == passwords.HASHING_THREADS == max(1, cores - 1)
    # Below the event loop's priority (niceness 0), so the loop wins a contested core.
    assert tracking.niceness == {5}
