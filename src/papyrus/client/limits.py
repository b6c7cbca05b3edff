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
MAX_TRANSACTION_BYTES = 32 * 1024 * 1024

# Room kept in every request for the part envelope around the entries (about 130 bytes).
PART_ENVELOPE_BYTES = 1024
# The commit-time check counts each queued change as its stored JSON plus what the upload adds
# to it (`"op_id":n,` and `"tx_id":n,`: at most 59 bytes with the comma between entries; the
# rest is encoded no longer than the core stores it), and keeps room for the part envelopes of a
# transaction at the limits (at most about 135 parts). So a transaction that passes the check
# fits the server's limits once encoded.
ENTRY_OVERHEAD = 64
ENVELOPES_RESERVE = 64 * 1024
MAX_QUEUED_BYTES = MAX_TRANSACTION_BYTES - ENVELOPES_RESERVE
# The largest change one request can carry, alone in a part.
MAX_ENTRY_BYTES = MAX_REQUEST_BYTES - PART_ENVELOPE_BYTES
