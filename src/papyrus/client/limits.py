"""The upload protocol's size limits, as the Papyrus API documents them (docs/client.md).

The client never imports server code, so the numbers are repeated here; a test checks that they
equal the server's. One request carries at most `MAX_REQUEST_OPERATIONS` entries in
`MAX_REQUEST_BYTES`; a larger transaction goes in parts (a staged upload), up to
`MAX_TRANSACTION_OPERATIONS` entries and `MAX_TRANSACTION_BYTES` of request bodies in all.
"""

from __future__ import annotations

MAX_REQUEST_OPERATIONS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_TRANSACTION_OPERATIONS = 100_000
MAX_TRANSACTION_BYTES = 64 * 1024 * 1024

# Room kept in every request for the part envelope around the entries (about 130 bytes).
PART_ENVELOPE_BYTES = 1024
# What the commit-time check adds to each queued change's stored JSON: the wire fields the upload
# adds to it (`op_id`, `tx_id`: at most 56 bytes, and a comma) with room to spare, so that a
# transaction that passes the check also fits once encoded, part envelopes included (every part
# holds at least one change, and each change's spare covers an envelope).
ENTRY_OVERHEAD = 256
# The largest change one request can carry in a part.
MAX_ENTRY_BYTES = MAX_REQUEST_BYTES - PART_ENVELOPE_BYTES
