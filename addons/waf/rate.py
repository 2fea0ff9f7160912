"""Counters for rate-based rules: requests per aggregation key over a sliding window.

The window is approximated the usual way (as Cloudflare and nginx do): the current fixed window's
count plus the previous window's count weighted by how much of it still overlaps.

- ``store: memory`` (the default): a bounded store per rule (least recently used keys are evicted),
  kept for the life of the process, so a policy reload keeps the counts. Counting is synchronous.
- ``store: redis://...``: the counters live in the throttle's Redis (one pool per URL for the
  process), shared by every replica. One atomic Lua script per request, with Redis's clock, applies
  the same approximation; counters expire after two windows. The rule loop awaits the count, and
  ``on_store_error`` decides while Redis is away.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from addons.throttle.redis_store import RedisStore, StoreUnavailable
from addons.waf.ipsets import addresses_to_inspect, parse_ip
from addons.waf.models import ForwardedIp, RateBased
from addons.waf.statements import Ctx, Hit, Node

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("sidegate")

DEFAULT_MAX_KEYS = 100_000
REDIS_PREFIX = "sidegate:"

# KEYS[1]: the counter, a hash of window index (i), current count (c) and previous count (p).
# ARGV: window in seconds; optionally the time in seconds (tests), else Redis's own clock, so that
# replicas agree. Returns the requests in the trailing window, this one included (a string: Lua
# numbers would be truncated to integers).
HIT = """
local now
if ARGV[2] then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local window = tonumber(ARGV[1])
local index = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'i', 'c', 'p')
local i = tonumber(s[1])
local current, previous
if i == nil or i < index - 1 then
  current, previous = 1, 0
elseif i == index - 1 then
  current, previous = 1, tonumber(s[2])
else
  current, previous = tonumber(s[2]) + 1, tonumber(s[3])
end
redis.call('HSET', KEYS[1], 'i', index, 'c', current, 'p', previous)
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2000))
local overlap = 1 - (now - index * window) / window
return tostring(current + previous * overlap)
"""


class RateStore(Protocol):
    def hit(self, key: str, window: float, now: float) -> float:
        """Count one request for ``key``; return the requests in the trailing window, this one included."""
        ...


class MemoryRateStore:
    name = "memory"

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._keys: OrderedDict[str, tuple[int, int, int]] = OrderedDict()  # key -> (window index, current, previous)

    def __len__(self) -> int:
        return len(self._keys)

    def hit(self, key: str, window: float, now: float) -> float:
        index = int(now // window)
        state = self._keys.get(key)
        if state is None or state[0] < index - 1:
            current, previous = 1, 0
        elif state[0] == index - 1:
            current, previous = 1, state[1]
        else:
            current, previous = state[1] + 1, state[2]
        self._keys[key] = (index, current, previous)
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        overlap = 1.0 - (now - index * window) / window
        return current + previous * overlap


_memory_stores: dict[tuple[str, bool], MemoryRateStore] = {}


def memory_rate_store(rule_id: str, *, fallback: bool = False) -> MemoryRateStore:
    """One store per rule id for the life of the process: a policy reload keeps the counts.

    ``fallback``: the rule's local counters while Redis is away (``on_store_error: local``), kept
    apart from the counts the rule made with ``store: memory``."""
    store = _memory_stores.get((rule_id, fallback))
    if store is None:
        store = _memory_stores[rule_id, fallback] = MemoryRateStore()
    return store


class RedisRateStore:
    """Rate counters in Redis, through the throttle's store (its pool, timeout and circuit breaker).

    It remembers whether Redis was away, so that an outage logs one warning and the recovery one
    line, however many rules and requests meet it.
    """

    name = "redis"

    def __init__(self, redis: RedisStore) -> None:
        self.redis = redis
        self.degraded = False
        self._failed_at = 0.0

    async def hit(self, key: str, window: float, at: float | None = None) -> float:
        """Count one request for ``key`` (at Redis's time, or ``at``); StoreUnavailable if Redis is away."""
        started = time.monotonic()
        args: list[Any] = [repr(float(window))] if at is None else [repr(float(window)), repr(at)]
        try:
            raw = await self.redis.run_script(HIT, [REDIS_PREFIX + key], args)
        except StoreUnavailable as e:
            self._failed_at = time.monotonic()
            if not self.degraded:
                log.warning("sidegate: WAF rate store %s unavailable (%s); on_store_error applies", self.url_safe, e)
                self.degraded = True
            raise
        # Only a call that started after the last failure says Redis is back: one that was in
        # flight while the breaker opened may still come back fine.
        if self.degraded and started > self._failed_at:
            log.info("sidegate: WAF rate store %s is back", self.url_safe)
            self.degraded = False
        return float(raw)

    @property
    def url_safe(self) -> str:
        return self.redis.url_safe


_redis_rate_stores: dict[RedisStore, RedisRateStore] = {}


def redis_rate_store(redis: RedisStore) -> RedisRateStore:
    """One per Redis store (itself one per URL for the process): reloads keep its degraded state."""
    store = _redis_rate_stores.get(redis)
    if store is None:
        store = _redis_rate_stores[redis] = RedisRateStore(redis)
    return store


@dataclass(frozen=True, slots=True)
class SharedRate:
    """A web ACL's rate counters in Redis, and what its rate rules do while Redis is away."""

    store: RedisRateStore
    on_error: str  # allow | deny | local
    replicas: int


@dataclass(slots=True)
class RateHit(Hit):
    """A rate rule's scope-down matched and its key is known; the request is yet to be counted."""

    leaf: RateLeaf | None = None
    key: str = ""

    @property
    def shared(self) -> bool:
        return self.leaf is not None and self.leaf.shared is not None

    def count(self, trace: list[dict[str, Any]]) -> Hit | None:
        assert self.leaf is not None
        return self.leaf.count(self.key, trace)

    async def settle(self, trace: list[dict[str, Any]]) -> Hit | None:
        assert self.leaf is not None
        return await self.leaf.settle(self.key, trace)


@dataclass(slots=True)
class RateLeaf(Node):
    """``match`` finds the aggregation key (scope-down first); the rule loop then counts the request:
    at once in memory (``count``), or awaiting Redis (``settle``)."""

    rule_id: str
    spec: RateBased
    scope_down: Node | None
    store: RateStore  # memory: the counters, or with a shared store, the local fallback's
    clock: Callable[[], float] = time.monotonic
    shared: SharedRate | None = None

    def __post_init__(self) -> None:
        self.needs_body = self.scope_down.needs_body if self.scope_down else False
        self.requirement = None

    def match(self, ctx: Ctx) -> Hit | None:
        if self.scope_down is not None and self.scope_down.match(ctx) is None:
            return None
        parts = []
        for key in self.spec.key:
            value = _key_part(key, ctx, self.spec.forwarded_ip)
            if value is None:
                return None  # forwarded header absent: AWS WAF skips the rule for this request
            parts.append(value)
        digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:20]
        # the window is part of the counter's name: a reload that changes it starts afresh
        return RateHit("rate", "", (), leaf=self, key=f"waf:{self.rule_id}:{self.spec.window}:{digest}")

    def count(self, key: str, trace: list[dict[str, Any]]) -> Hit | None:
        count = self.store.hit(key, float(self.spec.window), self.clock())
        return self._verdict(count, self.spec.limit, {"rule": self.rule_id, "store": "memory"}, trace)

    async def settle(self, key: str, trace: list[dict[str, Any]]) -> Hit | None:
        shared = self.shared
        assert shared is not None
        try:
            count = await shared.store.hit(key, float(self.spec.window))
        except StoreUnavailable:
            entry: dict[str, Any] = {"rule": self.rule_id, "store": "redis", "store_error": True}
            if shared.on_error == "allow":
                trace.append({**entry, "fallback": "allow"})
                return None
            if shared.on_error == "deny":
                trace.append({**entry, "fallback": "deny"})
                return Hit("rate", "rate store unavailable (on_store_error: deny)", ())
            # local: each replica keeps its share of the limit until Redis is back
            limit = max(1, self.spec.limit // shared.replicas)
            count = self.store.hit(key, float(self.spec.window), self.clock())
            local = {"rule": self.rule_id, "store": "local", "store_error": True, "fallback": "local"}
            return self._verdict(count, limit, local, trace)
        return self._verdict(count, self.spec.limit, {"rule": self.rule_id, "store": "redis"}, trace)

    def _verdict(self, count: float, limit: int, entry: dict[str, Any], trace: list[dict[str, Any]]) -> Hit | None:
        entry["count"] = round(count, 3)
        entry["limit"] = limit
        trace.append(entry)
        if count > limit:
            return Hit("rate", f"{count:.0f} requests in {self.spec.window}s (limit {limit})", ())
        return None


def _key_part(key: str, ctx: Ctx, forwarded: ForwardedIp | None) -> str | None:
    view = ctx.view
    if key == "ip":
        return view.peer
    if key == "forwarded_ip":
        assert forwarded is not None  # validated at load
        header = view.header(forwarded.header)
        addresses = addresses_to_inspect(view.peer, header, forwarded.model_copy(update={"position": "first"}))
        if not addresses:
            return None
        return addresses[0] if parse_ip(addresses[0]) is not None else "malformed"
    if key == "method":
        return view.method
    if key == "uri_path":
        return view.raw_path
    if key == "query_string":
        return view.raw_query
    if key == "constant":
        return ""
    kind, _, name = key.partition(":")
    if kind == "header":
        return view.header(name.lower()) or ""
    if kind == "cookie":
        return next((v for n, v in view.cookies() if n == name), "")
    if kind == "query_arg":
        return next((v for n, _, v in view.query_args() if n == name.lower()), "")
    if kind == "label_namespace":
        prefix = name.rstrip(":") + ":"
        return ",".join(sorted(label for label in ctx.labels if label.startswith(prefix)))
    return ""
