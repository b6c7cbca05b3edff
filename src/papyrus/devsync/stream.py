"""The sync stream: checkpoints, data and keepalive lines for one connected client.

Lines follow the PowerSync service (checked against recorded captures): the first checkpoint
of a connection is a full `checkpoint`, later ones are `checkpoint_diff` lines that always
repeat the current `write_checkpoint`; each is followed by `data` lines (ops above the client's
position, up to the checkpoint, in chunks) and `checkpoint_complete` (or
`partial_checkpoint_complete` per higher priority). `token_expires_in` comes every ~20 s, at
20 s before expiry, and finally as 0, which ends the stream.

Streams do not poll: the replicator's NOTIFY after each storage commit wakes them, and a
stream only reads storage when a bucket of its own changed or replication moved past a
keepalive message (which is how write checkpoints become visible).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from papyrus.devsync.checksums import to_signed
from papyrus.devsync.storage import BucketChecksum, Checkpoint, OpRow, StorageReader
from papyrus.devsync.sync_rules import (
    RequestContext,
    ResolvedBucket,
    ResolvedRequest,
    SyncConfig,
)
from papyrus.devsync.values import json_text

log = logging.getLogger(__name__)


@dataclass
class _Event:
    seq: int
    buckets: frozenset[str] | None  # None: anything may have changed
    message: bool


class CheckpointBroadcaster:
    """Wakes waiting streams when replication commits; remembers recent changed buckets."""

    def __init__(self, history: int = 512) -> None:
        self.seq = 0
        self._history: deque[_Event] = deque(maxlen=history)
        self._event = asyncio.Event()
        self.closing = False

    def publish(self, buckets: frozenset[str] | None, *, message: bool = False) -> None:
        self.seq += 1
        self._history.append(_Event(self.seq, buckets, message))
        self._event.set()
        self._event = asyncio.Event()

    def close(self) -> None:
        """Ask every stream to end (service shutdown)."""
        self.closing = True
        self.publish(None)

    def since(self, seq: int) -> tuple[frozenset[str] | None, bool]:
        """Buckets changed after `seq` (None = unknown/all) and whether a keepalive passed."""
        if seq >= self.seq:
            return frozenset(), False
        if not self._history or self._history[0].seq > seq + 1:
            return None, True
        changed: set[str] = set()
        message = False
        for event in self._history:
            if event.seq <= seq:
                continue
            if event.buckets is None:
                return None, True
            changed |= event.buckets
            message = message or event.message
        return frozenset(changed), message

    async def wait(self, seq: int, seconds: float) -> None:
        """Until something was published after `seq`, or `seconds` passed."""
        if self.seq > seq or seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)


@dataclass
class StreamOptions:
    keepalive_interval: float = 20.0
    expiry_warning: float = 20.0
    chunk_ops: int = 1000


@dataclass
class SyncSession:
    """One `/sync/stream` connection."""

    reader: StorageReader
    rules: SyncConfig
    broadcaster: CheckpointBroadcaster
    ready: asyncio.Event
    user_id: str
    token_payload: dict[str, Any]
    token_exp: float
    request: dict[str, Any]
    options: StreamOptions = field(default_factory=StreamOptions)

    async def lines(self) -> AsyncIterator[str]:
        """NDJSON lines (each ending in a newline) until the token expires or shutdown."""
        clock = _ExpiryClock(self.token_exp, self.options)
        if clock.expires_in() <= 0:
            yield '{"token_expires_in":0}\n'
            return
        seen = self.broadcaster.seq
        while not self.ready.is_set():
            line = clock.due_line()
            if line is not None:
                yield line
                if clock.finished:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), clock.seconds_to_next())
        version = self.rules.version
        ctx = RequestContext(self.user_id, self.token_payload, self.request.get("parameters"))
        resolved = self.rules.resolve(ctx, self.request.get("streams"))
        names = [b.bucket for b in resolved.buckets]
        mine = frozenset(names)
        positions: dict[str, int] = {}
        for entry in self.request.get("buckets") or ():
            positions[entry["name"]] = int(entry["after"])
        client_id = self.request.get("client_id") or ""
        raw_data = self.request.get("raw_data") is True
        last: dict[str, BucketChecksum] | None = None
        last_write: int | None = None
        force = True

        while True:
            if self.broadcaster.closing or self.rules.version != version:
                return  # shutdown, or a new sync config: the client reconnects
            changed, message = self.broadcaster.since(seen)
            seen = self.broadcaster.seq
            if force or message or changed is None or (changed & mine):
                force = False
                checkpoint = await self.reader.checkpoint(names, self.user_id, client_id)
                sums = {n: checkpoint.buckets.get(n, BucketChecksum(0, 0)) for n in names}
                text = _checkpoint_line(resolved, checkpoint, sums, last, last_write)
                if text is not None:
                    last, last_write = sums, checkpoint.write_checkpoint
                    yield text
                    to_fetch = {
                        n for n in names if positions.get(n, 0) < checkpoint.last_ops.get(n, 0)
                    }
                    complete = True
                    async for data_line in self._data(
                        resolved.buckets, to_fetch, positions, checkpoint, raw_data
                    ):
                        if data_line is None:
                            complete = False
                            break
                        yield data_line
                    if not complete:
                        force = True  # compacted underneath us: start a newer checkpoint
                        continue
            line = clock.due_line()
            if line is not None:
                yield line
                if clock.finished:
                    return
                continue
            await self.broadcaster.wait(seen, clock.seconds_to_next())

    async def _data(
        self,
        buckets: list[ResolvedBucket],
        to_fetch: set[str],
        positions: dict[str, int],
        checkpoint: Checkpoint,
        raw_data: bool,
    ) -> AsyncIterator[str | None]:
        """Data lines, then completion lines; None means the checkpoint cannot complete
        because ops at or below it were compacted into ones above it."""
        last_op = checkpoint.last_op_id
        groups: dict[int, list[str]] = {}
        for bucket in buckets:
            if bucket.bucket in to_fetch:
                groups.setdefault(bucket.priority, []).append(bucket.bucket)
        priorities = sorted(groups) or [3]
        complete_id = json_text(str(last_op))
        for index, priority in enumerate(priorities):
            for name in groups.get(priority, ()):
                after = positions.get(name, 0)
                while after < last_op:
                    ops = await self.reader.ops(name, after, last_op, self.options.chunk_ops)
                    if not ops:
                        break
                    has_more = len(ops) >= self.options.chunk_ops
                    next_after = ops[-1].op_id
                    valid = all(op.target_op is None or op.target_op <= last_op for op in ops)
                    yield _data_line(name, after, next_after, has_more, ops, raw_data)
                    positions[name] = after = next_after
                    if not valid:
                        yield None
                        return
                    if not has_more:
                        break
            if index < len(priorities) - 1:
                yield (
                    f'{{"partial_checkpoint_complete":{{"last_op_id":{complete_id},'
                    f'"priority":{priority}}}}}\n'
                )
        yield f'{{"checkpoint_complete":{{"last_op_id":{complete_id}}}}}\n'


def _bucket_json(bucket: ResolvedBucket, sums: BucketChecksum) -> dict[str, Any]:
    return {
        "bucket": bucket.bucket,
        "checksum": to_signed(sums.checksum),
        "count": sums.count,
        "priority": bucket.priority,
        "subscriptions": list(bucket.subscriptions),
    }


def _checkpoint_line(
    resolved: ResolvedRequest,
    checkpoint: Checkpoint,
    sums: dict[str, BucketChecksum],
    last: dict[str, BucketChecksum] | None,
    last_write: int | None,
) -> str | None:
    """The next `checkpoint` (first) or `checkpoint_diff` line; None if nothing changed."""
    write = checkpoint.write_checkpoint
    body: dict[str, Any] = {"last_op_id": str(checkpoint.last_op_id)}
    if last is None:
        if write is not None:
            body["write_checkpoint"] = str(write)
        body["buckets"] = [_bucket_json(b, sums[b.bucket]) for b in resolved.buckets]
        body["streams"] = resolved.streams
        return json_text({"checkpoint": body}) + "\n"
    updated = [b for b in resolved.buckets if sums[b.bucket] != last.get(b.bucket)]
    if not updated and write == last_write:
        return None
    if write is not None:
        body["write_checkpoint"] = str(write)
    body["removed_buckets"] = []
    body["updated_buckets"] = [_bucket_json(b, sums[b.bucket]) for b in updated]
    return json_text({"checkpoint_diff": body}) + "\n"


def _op_json(op: OpRow, raw_data: bool) -> str:
    if op.op in ("PUT", "REMOVE"):
        if op.data is None:
            data = "null"
        elif raw_data:
            data = json_text(op.data)
        else:
            data = op.data  # legacy clients: the row as a nested object
        return (
            f'{{"op_id":"{op.op_id}","op":"{op.op}","object_type":{json_text(op.object_type)},'
            f'"object_id":{json_text(op.object_id)},"checksum":{op.checksum},'
            f'"subkey":{json_text(op.subkey)},"data":{data}}}'
        )
    return f'{{"op_id":"{op.op_id}","op":"{op.op}","checksum":{op.checksum}}}'


def _data_line(
    bucket: str, after: int, next_after: int, has_more: bool, ops: list[OpRow], raw_data: bool
) -> str:
    body = ",".join(_op_json(op, raw_data) for op in ops)
    return (
        f'{{"data":{{"bucket":{json_text(bucket)},"after":"{after}",'
        f'"has_more":{"true" if has_more else "false"},"data":[{body}],'
        f'"next_after":"{next_after}"}}}}\n'
    )


class _ExpiryClock:
    """When to send `token_expires_in`, following the service's token stream."""

    def __init__(self, exp: float, options: StreamOptions) -> None:
        self.exp = exp
        self.options = options
        self.finished = False
        self._next = self._schedule(time.time())

    def expires_in(self) -> int:
        return max(0, math.ceil(self.exp - time.time()))

    def _schedule(self, now: float) -> float:
        keepalive = self.options.keepalive_interval * (0.9 + random.random() * 0.2)
        warning_at = self.exp - self.options.expiry_warning
        target = warning_at if warning_at > now else self.exp
        return min(now + keepalive, target + 0.003)

    def seconds_to_next(self) -> float:
        return max(0.0, self._next - time.time())

    def due_line(self) -> str | None:
        now = time.time()
        if now < self._next:
            return None
        remaining = self.expires_in()
        self.finished = remaining == 0
        self._next = self._schedule(now)
        return json.dumps({"token_expires_in": remaining}, separators=(",", ":")) + "\n"
