"""Issue counters and event dedup markers of the distributed mode, kept in Redis.

Elasticsearch on the test cluster has no scripts, so it cannot increment a
counter atomically; several workers may process events of one issue at once.
Redis can: each step below is one Lua script, atomic on the Redis server, so
counts, first/last seen, the user set and the new/regressed decisions are
exact no matter how many workers run.  Elasticsearch gets a copy of each issue
(see ``ElasticStore``), written with ``version_type=external`` and the issue's
``rev`` as version, so an older copy can never overwrite a newer one.

Exactly-once counting, though a batch may be processed more than once (a
worker killed before it acknowledged the batch, Elasticsearch failing
mid-way): every event has a marker ``ev:{project}:{event_id}``.  ``claim``
creates it with the UTC day of the index the event goes to (so a retry and a
duplicate land in the same daily index); ``count`` flips it to ``day+`` and
applies the event to its issue only if it was not flipped before.  Markers
live DEDUP_SECONDS; the event's document id ``{project}-{event_id}`` with
``op_type=create`` still refuses a later duplicate within the same day's index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

# How long an event id is remembered for dedup across daily indices: SDK
# retries and our own re-processing happen within minutes; each marker costs
# about 90 bytes of Redis memory.
DEDUP_SECONDS = 6 * 3600

_RESOLVE = """
local p = ARGV[1]
local out = {}
for i = 2, #ARGV, 2 do
  local map = p .. ':fp:' .. ARGV[i]
  local id = redis.call('HGET', map, ARGV[i + 1])
  if not id then
    id = redis.call('INCR', p .. ':seq:issue')
    redis.call('HSET', map, ARGV[i + 1], id)
    redis.call('HSET', p .. ':issue:' .. id, 'id', id, 'project_id', ARGV[i],
      'fingerprint', ARGV[i + 1], 'status', 'unresolved', 'count', 0, 'user_count', 0, 'rev', 0)
  end
  out[#out + 1] = tonumber(id)
end
return out
"""

_CLAIM = """
local p, ttl = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 2 do
  local k = p .. ':ev:' .. ARGV[i]
  if redis.call('SET', k, ARGV[i + 1], 'NX', 'EX', ttl) then
    out[#out + 1] = ''
  else
    out[#out + 1] = redis.call('GET', k) or ''
  end
end
return out
"""

# Per event: marker, issue id, timestamp, title, culprit, level, user key, apply (1/0).
# Result per event: 0 nothing, 1 counted, 2 counted and first of its issue; +4 regressed.
# Markers: ``day`` claimed, ``day+`` counted, ``day!`` an old duplicate (apply 0: its id was
# stored before the marker existed), never counted unless a worker that stored it (201)
# counts it: two copies of one event processed at once by two workers end counted once.
_COUNT = """
local p, now = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 8 do
  local k = p .. ':ev:' .. ARGV[i]
  local v = redis.call('GET', k)
  local res = 0
  local last = v and string.sub(v, -1)
  if v and ARGV[i + 7] == '0' then
    if last ~= '+' and last ~= '!' then
      redis.call('SET', k, v .. '!', 'KEEPTTL')
    end
  elseif v and last ~= '+' then
    if last == '!' then v = string.sub(v, 1, -2) end
    redis.call('SET', k, v .. '+', 'KEEPTTL')
    do
      local id = ARGV[i + 1]
      local ts = tonumber(ARGV[i + 2])
      local ik = p .. ':issue:' .. id
      local n = redis.call('HINCRBY', ik, 'count', 1)
      res = 1
      if n == 1 then
        redis.call('HSET', ik, 'first_seen', ARGV[i + 2], 'last_seen', ARGV[i + 2],
          'title', ARGV[i + 3], 'culprit', ARGV[i + 4], 'level', ARGV[i + 5])
        res = 2
      else
        if ts < tonumber(redis.call('HGET', ik, 'first_seen')) then
          redis.call('HSET', ik, 'first_seen', ARGV[i + 2])
        end
        if ts >= tonumber(redis.call('HGET', ik, 'last_seen')) then
          redis.call('HSET', ik, 'last_seen', ARGV[i + 2], 'title', ARGV[i + 3],
            'level', ARGV[i + 5])
        end
      end
      if ARGV[i + 6] ~= '' and redis.call('SADD', p .. ':users:' .. id, ARGV[i + 6]) == 1 then
        redis.call('HINCRBY', ik, 'user_count', 1)
      end
      if redis.call('HGET', ik, 'status') == 'resolved' then
        redis.call('HSET', ik, 'status', 'unresolved', 'regressed_at', now)
        res = res + 4
      end
      redis.call('HINCRBY', ik, 'rev', 1)
    end
  end
  out[#out + 1] = res
end
return out
"""

_SET_STATUS = """
local ik = ARGV[1] .. ':issue:' .. ARGV[2]
if redis.call('HGET', ik, 'project_id') ~= ARGV[3] then return 0 end
if tonumber(redis.call('HGET', ik, 'count')) == 0 then return 0 end
redis.call('HSET', ik, 'status', ARGV[4])
if ARGV[4] == 'resolved' then
  redis.call('HSET', ik, 'resolved_at', ARGV[5])
else
  redis.call('HDEL', ik, 'resolved_at')
end
redis.call('HINCRBY', ik, 'rev', 1)
return 1
"""


@dataclass(slots=True)
class Counted:
    counted: bool
    created: bool
    regressed: bool


@dataclass(slots=True)
class CountArgs:
    marker: str  # "{project_id}:{event_id}"
    issue_id: int
    timestamp: float
    title: str
    culprit: str
    level: str
    user_key: str | None
    apply: bool  # False: an old duplicate (409 on a fresh marker); only mark it


class IssueState:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._resolve = client.register_script(_RESOLVE)
        self._claim = client.register_script(_CLAIM)
        self._count = client.register_script(_COUNT)
        self._set_status = client.register_script(_SET_STATUS)

    def resolve(self, items: Sequence[tuple[int, str]]) -> list[int]:
        """Issue id of each (project id, fingerprint); the first sight of one makes a new id."""
        if not items:
            return []
        args: list[Any] = [self.prefix]
        for project_id, fingerprint in items:
            args += [project_id, fingerprint]
        return [int(i) for i in self._resolve(args=args)]

    def claim(self, items: Sequence[tuple[str, str]]) -> list[str]:
        """For each (marker, day): '' if this call created the marker, else its value
        (``day``, ``day+`` once counted, ``day!`` for an old duplicate)."""
        if not items:
            return []
        args: list[Any] = [self.prefix, DEDUP_SECONDS]
        for marker, day in items:
            args += [marker, day]
        return [v.decode() if isinstance(v, bytes) else str(v) for v in self._claim(args=args)]

    def count(self, items: Sequence[CountArgs], now: float) -> list[Counted]:
        if not items:
            return []
        args: list[Any] = [self.prefix, repr(now)]
        for it in items:
            args += [
                it.marker,
                it.issue_id,
                repr(it.timestamp),
                it.title,
                it.culprit,
                it.level,
                it.user_key or "",
                "1" if it.apply else "0",
            ]
        return [
            Counted(bool(r & 3), bool(r & 2), bool(r & 4))
            for r in (int(x) for x in self._count(args=args))
        ]

    def set_status(self, project_id: int, issue_id: int, status: str, now: float) -> bool:
        return bool(self._set_status(args=[self.prefix, issue_id, project_id, status, repr(now)]))

    def issues(self, issue_ids: Sequence[int]) -> list[dict[str, Any] | None]:
        """Current state of each issue (None: unknown), as typed values."""
        pipe = self.redis.pipeline(transaction=False)
        for issue_id in issue_ids:
            pipe.hgetall(f"{self.prefix}:issue:{issue_id}")
        return [_typed(raw) if raw else None for raw in pipe.execute()]


_INTS = ("id", "project_id", "count", "user_count", "rev")
_FLOATS = ("first_seen", "last_seen", "regressed_at", "resolved_at")


def _typed(raw: dict[bytes, bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for name in _INTS:
        if name in out:
            out[name] = int(out[name])
    for name in _FLOATS:
        if name in out:
            out[name] = float(out[name])
    return out
