"""Token buckets with API Gateway's semantics, and the in-memory store.

``rate`` is the steady refill in requests per second (fractions allowed), ``burst`` the bucket
capacity; a new bucket starts full. A request must find a token in every applicable enforced
bucket; it then takes one from each, and otherwise from none (a request refused by one tier never
burns tokens of the others, so refused requests never count against a client). Report-only
buckets are evaluated the same way but never decide: they take a token when they have one, and
report a would-be refusal when they do not.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_MAX_BUCKETS = 100_000


@dataclass(frozen=True, slots=True)
class BucketSpec:
    key: str  # store key, e.g. "bookstore:prod:route:GET /books"; secrets never appear in it
    tier: str  # "account", "stage", "route", "plan", "plan_route"
    rate: float
    burst: int
    enforced: bool = True
    # False for a bucket the policy alone bounds (account, stage, route, an API key's plan: no
    # client part in the key); the memory store keeps those apart from the per-client buckets
    # it evicts, for as long as it lives
    evictable: bool = True


class BucketResult(NamedTuple):  # a tuple: made for every tier of every request, cheaply
    spec: BucketSpec
    tokens_before: float
    tokens_after: float
    allowed: bool  # this bucket had a token
    retry_after: float  # seconds until it has one (0 when allowed)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs three times as much
class Decision:
    admitted: bool
    results: tuple[BucketResult, ...]

    @property
    def refused_by(self) -> BucketResult | None:
        if self.admitted:  # every enforced bucket had a token
            return None
        return next((r for r in self.results if r.spec.enforced and not r.allowed), None)

    @property
    def retry_after(self) -> float:
        waits = [r.retry_after for r in self.results if r.spec.enforced and not r.allowed]
        return max(waits) if waits else 0.0


def refill(tokens: float, updated: float, now: float, rate: float, burst: int) -> float:
    if now <= updated:
        return tokens
    return min(float(burst), tokens + (now - updated) * rate)


def wait_for_token(tokens: float, rate: float) -> float:
    if tokens >= 1.0:
        return 0.0
    return math.inf if rate <= 0 else (1.0 - tokens) / rate


_new_result = tuple.__new__

SHARD_FROM = 65_536  # bounds at least this large are split into shards
SHARDS = 64


class MemoryStore:
    """Buckets in this process, bounded: least recently used buckets are evicted beyond
    ``max_buckets`` (an evicted bucket comes back full, as a new one does).

    Only buckets with a client part in their key count against the bound and are ever evicted.
    A tier without one (account, stage, route, an API key's plan) has one bucket per route or key
    of the policy, so the policy bounds them; they live in a plain map for the life of the store,
    and a flood of new clients can never reset the account's or a route's bucket.

    A large bound is split into 64 shards by key hash, each a least-recently-used map of its share
    of the bound (eviction is then least recently used within the key's shard). One big map keeps
    rebuilding its table as evictions fill it, and tables that large come from the C allocator in
    blocks it seldom gives back: memory grew in steps (+15 MB by 1,000,000 distinct clients at the
    default bound). Shard tables stay small, their blocks are reused, and memory stays flat (see
    bench/README.md).

    A bucket's state is a two-item list, ``[tokens, updated]``, changed in place: a request makes
    no new objects for the buckets it finds.
    """

    name = "memory"

    def __init__(self, max_buckets: int = DEFAULT_MAX_BUCKETS) -> None:
        self.max_buckets = max_buckets
        shards = SHARDS if max_buckets >= SHARD_FROM else 1
        self._shards: list[OrderedDict[str, list[float]]] = [OrderedDict() for _ in range(shards)]
        self._mask = shards - 1
        # shares of the bound that add up to it exactly
        self._limits = [max_buckets // shards + (1 if i < max_buckets % shards else 0) for i in range(shards)]
        self._tiers: dict[str, list[float]] = {}  # the buckets the policy bounds

    def __len__(self) -> int:
        """Buckets held: the evictable ones (at most ``max_buckets``) and the policy's own."""
        return self.evictable + len(self._tiers)

    @property
    def evictable(self) -> int:
        """Per-client buckets held: the ones ``max_buckets`` bounds."""
        return sum(len(shard) for shard in self._shards)

    def _state(self, spec: BucketSpec, now: float) -> list[float]:
        """The bucket's state, made full when new (and the least recently used evicted beyond the bound)."""
        if not spec.evictable:
            state = self._tiers.get(spec.key)
            if state is None:
                state = self._tiers[spec.key] = [float(spec.burst), now]
            return state
        index = hash(spec.key) & self._mask
        shard = self._shards[index]
        state = shard.get(spec.key)
        if state is None:
            state = shard[spec.key] = [float(spec.burst), now]
            if len(shard) > self._limits[index]:
                shard.popitem(last=False)
        else:
            shard.move_to_end(spec.key)
        return state

    def acquire(self, specs: Sequence[BucketSpec], now: float) -> Decision:
        """Refill each bucket to ``now``; take a token from every one that has one if every enforced
        one has, else from none (one pass to read, one to write: this runs for every request)."""
        tiers = self._tiers
        states: list[list[float]] = []
        levels: list[float] = []
        admitted = True
        for spec in specs:
            state = tiers.get(spec.key) if not spec.evictable else None
            if state is None:
                state = self._state(spec, now)
            tokens, updated = state
            if now > updated:  # refill(), written out: a call per tier per request costs more than it
                tokens = min(float(spec.burst), tokens + (now - updated) * spec.rate)
            if tokens < 1.0 and spec.enforced:
                admitted = False
            states.append(state)
            levels.append(tokens)
        results: list[BucketResult] = []
        for spec, state, before in zip(specs, states, levels, strict=True):
            if before >= 1.0:
                after = before - 1.0 if admitted else before
                # tuple.__new__ directly: a NamedTuple's own __new__ is a Python function, twice the cost
                results.append(_new_result(BucketResult, (spec, before, after, True, 0.0)))
            else:
                after = before
                results.append(
                    _new_result(BucketResult, (spec, before, before, False, wait_for_token(before, spec.rate)))
                )
            state[0] = after
            state[1] = now
        return Decision(admitted, tuple(results))

    def peek(self, key: str) -> tuple[float, float] | None:
        state = self._tiers.get(key) or self._shards[hash(key) & self._mask].get(key)
        return None if state is None else (state[0], state[1])
