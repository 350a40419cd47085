"""The distributed queue: a Redis Stream of accepted events, drained by RQ jobs in batches.

Ingest appends each event with XADD (one pipelined round trip per group of
requests, see :class:`app.inbox.InboxWriter`) and answers ``200`` once Redis
has it: with ``appendonly yes`` Redis writes the AOF before it replies, so the
event survives a crash of any stacksift process and of Redis itself
(``appendfsync everysec``: only an OS crash or power loss can cost the last
second; ``appendfsync always`` closes that too, at a throughput cost).

Workers read with XREADGROUP (consumer group ``workers``), so every entry is
delivered to one worker; it stays pending until the worker acknowledges it
with XACK, which happens only after Elasticsearch has the event.  Entries of a
worker that died are taken over with XAUTOCLAIM after ``reclaim_seconds``.
An event that failed processing is acknowledged and parked in a sorted set
until its backoff is over, then appended again with one more attempt.

Nothing polls when idle: an RQ job ``jobs.process.drain`` is enqueued when
events arrive and no drain job is waiting (a SET NX flag), and each
``stacksift worker`` sweeps once a second for parked or orphaned entries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
import redis
from rq import Queue

from app.storage.models import InboxRow

log = logging.getLogger("stacksift.queue")

Row = tuple[int, float, bytes, bytes]
GROUP = "workers"
FLAG_SECONDS = 30
DRAIN_JOB = "jobs.process.drain"

# Parked entries whose backoff is over go back to the stream, atomically.
_UNPARK = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 500)
for _, member in ipairs(due) do
  local e = cjson.decode(member)
  redis.call('XADD', KEYS[2], '*', 'p', e.p, 'r', e.r, 'd', e.d, 'm', e.m, 'a', e.a)
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""


def entry_int(entry_id: bytes | str) -> int:
    """A stream id ``<ms>-<seq>`` as one integer (InboxRow.id is an int)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return (int(ms) << 20) | int(seq)


def entry_str(value: int) -> str:
    return f"{value >> 20}-{value & 0xFFFFF}"


def _row(entry_id: bytes, fields: dict[bytes, bytes]) -> InboxRow:
    return InboxRow(
        entry_int(entry_id),
        int(fields[b"p"]),
        float(fields[b"r"]),
        fields[b"d"],
        fields[b"m"],
        int(fields.get(b"a", b"0")),
    )


class RedisQueue:
    def __init__(self, client: redis.Redis, prefix: str, reclaim_seconds: float = 30.0) -> None:
        self.redis = client
        self.prefix = prefix
        self.stream = f"{prefix}:inbox"
        self.parked = f"{prefix}:parked"
        self.flag = f"{prefix}:drain-scheduled"
        self.counters = f"{prefix}:counters"
        self.queue_name = f"{prefix}-process"
        self.reclaim_ms = int(reclaim_seconds * 1000)
        self._unpark = client.register_script(_UNPARK)
        self._group_ready = False

    # -- set-up and state ----------------------------------------------------

    def setup(self) -> None:
        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def rq_queue(self) -> Queue:
        return Queue(self.queue_name, connection=self.redis)

    def stats(self) -> tuple[int, float | None]:
        """(entries waiting or in progress, received time of the oldest)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.stream)
        pipe.xrange(self.stream, count=1)
        pipe.zcard(self.parked)
        length, first, parked = pipe.execute()
        oldest = float(first[0][1][b"r"]) if first else None
        return int(length) + int(parked), oldest

    # -- ingest side -----------------------------------------------------------

    def enqueue(self, rows: Sequence[Row], counts: dict[tuple[int, str], int]) -> None:
        """Append rows and add ingest counters in one round trip; make sure a drain job
        is on its way.  Called by InboxWriter on its thread (see app.inbox)."""
        pipe = self.redis.pipeline(transaction=False)
        for project_id, received, payload, meta in rows:
            pipe.xadd(self.stream, {"p": project_id, "r": repr(received), "d": payload, "m": meta})
        self._add_counts(pipe, counts)
        if rows:
            pipe.set(self.flag, 1, nx=True, ex=FLAG_SECONDS)
        results = pipe.execute()
        if rows and results[-1]:
            self._enqueue_job()

    def _add_counts(self, pipe: Any, counts: dict[tuple[int, str], int]) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        for (project_id, reason), n in counts.items():
            pipe.hincrby(f"{self.counters}:{project_id}", reason, n)
            pipe.hincrby(f"{self.counters}:{project_id}:{day}", reason, n)

    def kick(self) -> None:
        """Enqueue a drain job unless one is already waiting."""
        if self.redis.set(self.flag, 1, nx=True, ex=FLAG_SECONDS):
            self._enqueue_job()

    def _enqueue_job(self) -> None:
        self.rq_queue().enqueue(DRAIN_JOB, job_timeout=900, result_ttl=0, failure_ttl=7 * 86400)

    def job_started(self) -> None:
        """A drain job runs: events arriving from now on need another one."""
        self.redis.delete(self.flag)

    # -- worker side -----------------------------------------------------------

    def read(self, consumer: str, count: int) -> list[InboxRow]:
        """The next batch for ``consumer``: its own unfinished entries first (a batch
        that failed), then new ones, then entries of consumers that went silent."""
        self.setup()
        for start in ("0", ">"):
            reply = self.redis.xreadgroup(GROUP, consumer, {self.stream: start}, count=count)
            rows = [_row(eid, f) for _, entries in reply for eid, f in entries if f]
            if rows:
                return rows
        claimed = self.redis.xautoclaim(
            self.stream, GROUP, consumer, self.reclaim_ms, start_id="0-0", count=count
        )
        rows = [_row(eid, f) for eid, f in claimed[1] if f]
        if rows:
            log.warning("took over %d entries of a worker that stopped", len(rows))
        return rows

    def ack(self, row_ids: Sequence[int], counts: dict[tuple[int, str], int]) -> None:
        """Acknowledge processed entries and add the processing counters, atomically:
        a batch processed twice (its first worker died before this) counts once."""
        pipe = self.redis.pipeline(transaction=True)
        if row_ids:
            ids = [entry_str(i) for i in row_ids]
            pipe.xack(self.stream, GROUP, *ids)
            pipe.xdel(self.stream, *ids)
        self._add_counts(pipe, counts)
        pipe.execute()

    def park(self, rows: Sequence[tuple[InboxRow, float]]) -> None:
        """Move failed entries out of the stream until ``not_before``, one more attempt."""
        if not rows:
            return
        pipe = self.redis.pipeline(transaction=True)
        for row, not_before in rows:
            member = orjson.dumps(
                {
                    "p": row.project_id,
                    "r": repr(row.received),
                    "d": row.payload.decode(),
                    "m": row.meta.decode(),
                    "a": row.attempts + 1,
                    "id": row.id,  # keeps two identical payloads distinct members
                }
            )
            pipe.zadd(self.parked, {member: not_before})
            pipe.xack(self.stream, GROUP, entry_str(row.id))
            pipe.xdel(self.stream, entry_str(row.id))
        pipe.execute()

    def append(self, rows: Sequence[Row]) -> None:
        """Put rows back in the stream as new, first attempts (dead-letter replay)."""
        if rows:
            self.enqueue(rows, {})

    def sweep(self) -> int:
        """Return parked entries whose time has come; start a drain job if anything waits."""
        moved = int(self._unpark(keys=[self.parked, self.stream], args=[repr(time.time())]))
        if moved or self.redis.xlen(self.stream):
            self.kick()
        return moved

    def forget_idle_consumers(self, idle_seconds: float = 3600) -> None:
        """Consumers (worker processes) that are gone and hold nothing are removed."""
        try:
            consumers = self.redis.xinfo_consumers(self.stream, GROUP)
        except redis.ResponseError:
            return
        for c in consumers:
            if c["pending"] == 0 and c["idle"] > idle_seconds * 1000:
                self.redis.xgroup_delconsumer(self.stream, GROUP, c["name"])

    def counts(self, project_id: int) -> dict[str, int]:
        raw = self.redis.hgetall(f"{self.counters}:{project_id}")
        return {k.decode(): int(v) for k, v in raw.items() if int(v)}
