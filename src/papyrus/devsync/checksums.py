"""Op and bucket checksums, computed exactly as the PowerSync service computes them.

Clients only add up the checksums they receive, so any 32-bit value would pass; using the
service's rule keeps a client's local buckets valid if it later talks to the real service.
"""

from __future__ import annotations

import hashlib

_MASK = 0xFFFFFFFF


def put_checksum(object_type: str, object_id: str, data: str) -> int:
    """Unsigned 32-bit checksum of a PUT: SHA-256 of `put.<type>.<id>.<data>`, first 4 bytes LE."""
    digest = hashlib.sha256(f"put.{object_type}.{object_id}.{data}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def remove_checksum(subkey: str) -> int:
    """Unsigned 32-bit checksum of a REMOVE: the same hash over `delete.<subkey>`."""
    digest = hashlib.sha256(f"delete.{subkey}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def add_checksums(a: int, b: int) -> int:
    """32-bit wrapping sum, kept unsigned (0 .. 2^32-1)."""
    return (a + b) & _MASK


def to_signed(checksum: int) -> int:
    """The signed int32 form the service sends in checkpoint lines."""
    checksum &= _MASK
    return checksum - 0x100000000 if checksum >= 0x80000000 else checksum
