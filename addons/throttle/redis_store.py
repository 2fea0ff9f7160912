"""Throttle buckets in Redis, shared by every sidecar replica.

All tiers of one request are decided in one round trip by one server-side Lua script (atomic:
no other request interleaves), with Redis's own clock (``TIME``) so that replicas with skewed
clocks agree. Buckets are hashes that expire when idle (the time an empty bucket takes to refill,
plus a margin), so Redis memory tracks active clients only.

The client is ``redis.asyncio`` with a bounded connection pool: a check never blocks mitmproxy's
event loop (a thread pool would add a hop per request and still need a bound), and every call has
a short timeout. When Redis is unreachable, slow or erroring, the caller's ``on_store_error``
decides; a circuit breaker then skips Redis for ``retry_interval`` seconds instead of paying a
timeout per request, and the next successful call closes it (automatic recovery).

Cost: a loopback round trip costs the proxy about 70 µs of CPU here before any client code, and
redis.asyncio adds as much again, so decisions that arrive while a call is in flight are batched
into the next call (see ``acquire``) and replies are parsed by hiredis.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from addons.throttle.buckets import BucketResult, BucketSpec, Decision

log = logging.getLogger("sidegate")

# One call decides a batch of requests, in order (see RedisStore.acquire). KEYS: every request's
# bucket keys, one request after the other. ARGV[1]: one string of numbers separated by spaces: per
# request its number of buckets n, then per bucket rate, burst, enforced (1/0), idle ttl in ms (one
# string: the client encodes one argument instead of a dozen per request). Returns per bucket,
# request after request: tokens before, tokens after (strings: Lua numbers would be truncated).
# The whole script is atomic, so each request's tiers are decided without interleaving.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local words, nums = {}, {}
for v in string.gmatch(ARGV[1], '%S+') do
  words[#words + 1] = v
  nums[#nums + 1] = tonumber(v)
end
local out = {}
local k, a = 0, 1
while a <= #nums do
  local n = nums[a]
  a = a + 1
  local before, admitted = {}, true
  for i = 1, n do
    local j = a + 4 * (i - 1)
    local rate, burst = nums[j], nums[j + 1]
    local state = redis.call('HMGET', KEYS[k + i], 'tokens', 'ts')
    local tokens = burst
    if state[1] then
      tokens = math.min(burst, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate)
    end
    before[i] = tokens
    if nums[j + 2] == 1 and tokens < 1 then admitted = false end
  end
  for i = 1, n do
    local after = before[i]
    if admitted and after >= 1 then after = after - 1 end
    redis.call('HSET', KEYS[k + i], 'tokens', tostring(after), 'ts', tostring(now))
    redis.call('PEXPIRE', KEYS[k + i], words[a + 4 * (i - 1) + 3])
    out[#out + 1] = tostring(before[i])
    out[#out + 1] = tostring(after)
  end
  k = k + n
  a = a + 4 * n
end
return out
"""
MAX_BATCH = 64  # requests per script call


class StoreUnavailable(Exception):
    """Redis could not decide (down, slow, erroring, or the breaker is open)."""


class RedisStore:
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        timeout: float = 0.05,
        retry_interval: float = 1.0,
        prefix: str = "sidegate:",
        max_connections: int = 64,
    ) -> None:
        self.url = url
        self._client: Any = None
        self._password = password
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._prefix = prefix
        self._max_connections = max_connections
        self._script: Any = None
        self._open_until = 0.0  # circuit breaker
        self.degraded = False
        self._pending: list[tuple[Sequence[BucketSpec], asyncio.Future[Decision]]] = []  # waiting for a call
        self._flusher: asyncio.Future[None] | None = None
        self._formatted: dict[tuple[float, int, bool], str] = {}
        self._scripts: dict[str, Any] = {}  # run_script's registered scripts, by source

    def _ensure(self) -> Any:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url,
                password=self._password,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                max_connections=self._max_connections,
                decode_responses=True,
            )
            self._script = self._client.register_script(ACQUIRE)
        return self._client

    async def acquire(self, specs: Sequence[BucketSpec]) -> Decision:
        """Decide one request's tiers in Redis.

        Requests are batched the way auto-pipelining clients do it: the first one is sent at once;
        those that arrive while a call is in flight wait for it and then go together in the next
        call (one round trip, one script run deciding them in arrival order). Under load this
        spreads a round trip's cost over several requests; an idle sidecar sends each alone.
        """
        self._refuse_while_open()
        self._ensure()
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending.append((specs, future))
        if self._flusher is None or self._flusher.done():
            # (mitmproxy runs tasks eagerly: a flush may finish before ensure_future returns)
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        batch: list[tuple[Sequence[BucketSpec], asyncio.Future[Decision]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._decide(batch)
        except BaseException as e:  # never leave a request waiting, whatever happened
            waiting, self._pending = batch + self._pending, []
            for _, future in waiting:
                if not future.done():
                    future.set_exception(StoreUnavailable(f"store failure: {type(e).__name__}"))
            if not isinstance(e, Exception):
                raise
            log.exception("sidegate: throttle store batch failed")

    async def _decide(self, batch: list[tuple[Sequence[BucketSpec], asyncio.Future[Decision]]]) -> None:
        keys: list[str] = []
        numbers: list[str] = []
        for specs, _ in batch:
            numbers.append(str(len(specs)))
            for spec in specs:
                keys.append(self._prefix + spec.key)
                numbers.append(self._numbers(spec))
        args = [" ".join(numbers)]
        try:
            if time.monotonic() < self._open_until:
                raise StoreUnavailable("circuit open")
            raw = await asyncio.wait_for(self._script(keys=keys, args=args), self._timeout * 2)
        except (RedisError, OSError, TimeoutError, StoreUnavailable) as e:
            if not isinstance(e, StoreUnavailable):
                if not self.degraded:
                    log.warning(
                        "sidegate: throttle store %s unavailable (%s); on_store_error applies", self.url_safe, e
                    )
                self._trip(e)
            self.degraded = True
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailable(str(e)))
            return
        # A call that started before the breaker opened may still succeed; only a call made with
        # the breaker closed says Redis is back.
        if self.degraded and time.monotonic() >= self._open_until:
            log.warning("sidegate: throttle store %s is back", self.url_safe)
            self.degraded = False
        values = [float(v) for v in raw]
        at = 0
        for specs, future in batch:
            results = []
            admitted = True
            for spec in specs:
                before, after = values[at], values[at + 1]
                at += 2
                allowed = before >= 1.0
                if spec.enforced and not allowed:
                    admitted = False
                wait = 0.0 if allowed else (1.0 - before) / spec.rate
                results.append(BucketResult(spec, before, after, allowed, wait))
            if not future.done():  # the request may have gone meanwhile (client disconnected)
                future.set_result(Decision(admitted, tuple(results)))

    def _refuse_while_open(self) -> None:
        """The circuit breaker: while open, Redis is skipped (and the store is still degraded)."""
        if time.monotonic() < self._open_until:
            self.degraded = True
            raise StoreUnavailable("circuit open")

    def _trip(self, e: BaseException) -> StoreUnavailable:
        """Open the breaker for ``retry_interval`` after a failed call."""
        self._open_until = time.monotonic() + self._retry_interval
        self.degraded = True
        return StoreUnavailable(str(e))

    def _numbers(self, spec: BucketSpec) -> str:
        """A bucket's script parameters, formatted once per (rate, burst, enforced)."""
        key = (spec.rate, spec.burst, spec.enforced)
        text = self._formatted.get(key)
        if text is None:
            idle_ms = math.ceil(spec.burst / spec.rate * 1000) + 60_000
            text = f"{spec.rate!r} {spec.burst} {1 if spec.enforced else 0} {idle_ms}"
            if len(self._formatted) >= 10_000:  # limits come from policies: a handful in practice
                self._formatted.clear()
            self._formatted[key] = text
        return text

    async def call(self, *command: Any) -> Any:
        """One Redis command under the same timeout and circuit breaker as the buckets."""
        self._refuse_while_open()
        client = self._ensure()
        try:
            return await asyncio.wait_for(client.execute_command(*command), self._timeout * 2)
        except (RedisError, OSError, TimeoutError) as e:
            raise self._trip(e) from None

    async def run_script(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """One Lua script (EVALSHA, loaded on first use) under the same timeout and circuit breaker."""
        self._refuse_while_open()
        client = self._ensure()
        try:
            runner = self._scripts.get(script)
            if runner is None:  # registered once per source (it hashes the script)
                runner = self._scripts[script] = client.register_script(script)
            return await asyncio.wait_for(runner(keys=keys, args=args), self._timeout * 2)
        except (RedisError, OSError, TimeoutError) as e:
            raise self._trip(e) from None

    async def peek(self, key: str) -> tuple[float, float] | None:
        client = self._ensure()
        state = await client.hmget(self._prefix + key, "tokens", "ts")
        return (float(state[0]), float(state[1])) if state[0] is not None else None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._scripts.clear()  # registered with the closed client

    @property
    def url_safe(self) -> str:
        """The URL without any password, for logs."""
        scheme, sep, rest = self.url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}"
