"""Where the alert engine keeps what it must remember between events.

Three things: frequency windows (how many matching events lately), throttles
(when a rule last notified about an issue) and pending digests (matches
folded in while throttled, sent when the throttle ends).  The engine only
talks to :class:`AlertState`, so the embedded worker keeps these in memory
(one worker thread holds the inbox lock) while several distributed workers
share them in Redis.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson


class AlertKey(NamedTuple):
    """What a window, a throttle and a digest belong to: a rule id alone could name
    another project's rule."""

    project_id: int
    rule_id: int
    issue_id: int

    @property
    def name(self) -> str:
        return f"{self.project_id}:{self.rule_id}:{self.issue_id}"


@dataclass(slots=True)
class Digest:
    """Matches folded in while a rule was throttled for an issue, now due."""

    key: AlertKey
    count: int
    since: float
    summary: dict[str, Any]


class AlertState(Protocol):
    def hit(
        self, key: AlertKey, event_id: str, now: float, window: float, threshold: int
    ) -> bool:
        """Count one matching event; True when more than ``threshold`` fell in ``window``."""
        ...

    def admit(
        self, key: AlertKey, now: float, throttle: float, summary: dict[str, Any]
    ) -> bool:
        """True: notify now (and start the throttle).  False: folded into the digest."""
        ...

    def due_digests(self, now: float) -> list[Digest]:
        """Digests whose throttle has ended, each handed out once; sending one restarts
        the throttle."""
        ...


class MemoryState:
    """One process, one evaluating thread; the lock only guards the digest ticker."""

    PRUNE_EVERY = 60.0

    def __init__(self) -> None:
        self._hits: dict[AlertKey, tuple[float, deque[float]]] = {}
        self._last: dict[AlertKey, tuple[float, float]] = {}  # -> (sent at, throttle)
        self._digests: dict[AlertKey, list[Any]] = {}  # -> [due, count, since, summary]
        self._lock = threading.Lock()
        self._pruned = 0.0

    def hit(
        self, key: AlertKey, event_id: str, now: float, window: float, threshold: int
    ) -> bool:
        entry = self._hits.get(key)
        if entry is None or entry[0] != window or entry[1].maxlen != threshold + 1:
            entry = self._hits[key] = (window, deque(maxlen=threshold + 1))
        times = entry[1]
        times.append(now)
        # Only the oldest of the last threshold+1 matters: O(1) time and bounded memory.
        return len(times) == times.maxlen and times[0] > now - window

    def admit(
        self, key: AlertKey, now: float, throttle: float, summary: dict[str, Any]
    ) -> bool:
        with self._lock:
            last = self._last.get(key)
            if last is None or now - last[0] >= throttle:
                self._last[key] = (now, throttle)
                return True
            pending = self._digests.get(key)
            if pending is None:
                self._digests[key] = [last[0] + throttle, 1, now, summary]
            else:
                pending[1] += 1
                pending[3] = summary
            return False

    def due_digests(self, now: float) -> list[Digest]:
        out: list[Digest] = []
        with self._lock:
            for key, (due, count, since, summary) in list(self._digests.items()):
                if due <= now:
                    del self._digests[key]
                    self._last[key] = (now, self._last[key][1])
                    out.append(Digest(key, count, since, summary))
            if now - self._pruned > self.PRUNE_EVERY:
                self._prune(now)
        return out

    def _prune(self, now: float) -> None:
        self._pruned = now
        for key, (sent, throttle) in list(self._last.items()):
            if now - sent >= throttle and key not in self._digests:
                del self._last[key]
        for key, (window, times) in list(self._hits.items()):
            if not times or times[-1] <= now - window:
                del self._hits[key]


# KEYS: last-sent, digest hash, due set; ARGV: now, throttle, summary, due member.
# The throttle compares the stored send time with ``now`` (not a key TTL), so it
# follows the caller's clock; the TTLs only collect garbage.
_ADMIT = """
local now = tonumber(ARGV[1])
local throttle = tonumber(ARGV[2])
local last = redis.call('GET', KEYS[1])
if (not last) or (now - tonumber(last) >= throttle) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', math.floor(throttle * 1000) + 60000)
  return 1
end
redis.call('HINCRBY', KEYS[2], 'count', 1)
redis.call('HSETNX', KEYS[2], 'since', ARGV[1])
redis.call('HSET', KEYS[2], 'summary', ARGV[3], 'throttle', ARGV[2])
redis.call('EXPIRE', KEYS[2], 2678400)
redis.call('ZADD', KEYS[3], 'NX', tonumber(last) + throttle, ARGV[4])
return 0
"""


class RedisState:
    """Shared by every worker: a sorted set per frequency window, an atomic script for
    the throttle (so exactly one worker wins the first notification), and a sorted set
    of due digests that ``ZREM`` hands to exactly one worker."""

    def __init__(self, client: Any, prefix: str = "stacksift:alerts:") -> None:
        self.r = client
        self.p = prefix
        self._admit = client.register_script(_ADMIT)

    def hit(
        self, key: AlertKey, event_id: str, now: float, window: float, threshold: int
    ) -> bool:
        name = f"{self.p}win:{key.name}"
        pipe = self.r.pipeline(transaction=True)
        pipe.zadd(name, {event_id: now})
        pipe.zremrangebyscore(name, "-inf", now - window)
        pipe.zremrangebyrank(name, 0, -(threshold + 2))  # keep at most threshold+1 members
        pipe.zcard(name)
        pipe.expire(name, max(1, math.ceil(window)) + 1)
        return int(pipe.execute()[3]) > threshold

    def admit(
        self, key: AlertKey, now: float, throttle: float, summary: dict[str, Any]
    ) -> bool:
        if throttle <= 0:
            return True
        name = key.name
        keys = [f"{self.p}last:{name}", f"{self.p}digest:{name}", f"{self.p}due"]
        return bool(
            self._admit(keys=keys, args=[repr(now), repr(throttle), orjson.dumps(summary), name])
        )

    def due_digests(self, now: float) -> list[Digest]:
        out: list[Digest] = []
        for member in self.r.zrangebyscore(f"{self.p}due", "-inf", now, start=0, num=500):
            if not self.r.zrem(f"{self.p}due", member):
                continue  # another worker took it
            name = member.decode() if isinstance(member, bytes) else member
            try:
                key = AlertKey(*map(int, name.split(":")))
            except (TypeError, ValueError):  # a member of a version keyed by rule alone
                continue
            digest = f"{self.p}digest:{name}"
            pipe = self.r.pipeline(transaction=True)
            pipe.hgetall(digest)
            pipe.delete(digest)
            data = {
                (k.decode() if isinstance(k, bytes) else k): v for k, v in pipe.execute()[0].items()
            }
            if not data:
                continue
            throttle = float(data.get("throttle", 0))
            self.r.set(f"{self.p}last:{name}", repr(now), px=int(throttle * 1000) + 60000)
            out.append(
                Digest(
                    key,
                    int(data.get("count", 0)),
                    float(data.get("since", now)),
                    orjson.loads(data.get("summary", b"{}")),
                )
            )
        return out
