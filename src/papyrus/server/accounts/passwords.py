"""Argon2id password hashing, off the event loop and bounded.

Hashes run in a pool with one thread per core but one (at least one), so a storm of sign-ins
queues for the pool instead of running dozens of 19 MiB hashes at once, and the event loop keeps
a core. Those threads also run at a lower scheduling priority than the event loop (Linux
schedules threads individually), so refreshes, token requests and uploads keep their latency
during a storm while sign-ins still progress (a higher niceness starved them on a busy machine;
a thread on every core, or no lower priority, let a 16-way storm triple the refresh p99).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

# Verified against when the email is unknown, so a failed login costs the same either way.
_DUMMY_HASH = _hasher.hash("papyrus-timing-equaliser")

# Niceness of the hashing threads: CFS weight 335 against the loop's 1024.
_HASHING_NICENESS = 5


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _lower_priority() -> None:
    # Not Linux, or not allowed: hashing is still bounded, only not deprioritised.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _HASHING_NICENESS)


HASHING_THREADS = max(1, _cores() - 1)
_pool = ThreadPoolExecutor(
    max_workers=HASHING_THREADS, thread_name_prefix="argon2", initializer=_lower_priority
)


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_pool, _hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def _verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.get_running_loop().run_in_executor(_pool, _verify)
