"""Tiered throttles. Checkpoints: method request (decide), method response (RateLimit headers).
Policy: ``kind: Throttle``.

Every request must find a token in each applicable bucket: the account tier, the stage default,
the route's own, each optionally per client (ip behind trusted proxies, a header, the verified
client certificate subject, or a composite). Refused: 429 ``{"message":"Too Many Requests"}``
(THROTTLED) with ``Retry-After`` (whole seconds, at least 1) and the IETF ``RateLimit-Policy`` /
``RateLimit`` headers of the most restrictive tier. A tier in report mode never refuses; its
would-be refusals are traced and counted.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from addons.clientip import client_ip
from addons.decision import Exchange, Flag, Reject
from addons.policy.models import ApiPolicy, RateLimit, ThrottlePolicy
from addons.throttle.buckets import BucketSpec, Decision, MemoryStore
from addons.throttle.plans import KEY_VAR, KeyMatch
from addons.throttle.redis_store import RedisStore, StoreUnavailable

RATELIMIT_VAR = "throttle_ratelimit_headers"
# A tier as built once per route: a ready BucketSpec, or (key prefix, tier, limit, enforced) when
# its bucket key needs the request's client part.
Tier = BucketSpec | tuple[str, str, RateLimit, bool]


class Throttle:
    name = "throttle"

    def __init__(
        self,
        policy: ThrottlePolicy,
        api: ApiPolicy,
        source: str,
        *,
        enforced: bool,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.source = source
        self.prefix = f"{api.name}:{api.stage}"
        self._store = MemoryStore(policy.max_buckets)
        self._trusted = tuple(policy.trusted_proxies)
        self._headers = policy.rate_limit_headers
        self._headers_on_success = policy.rate_limit_headers_on_success
        if not (self._headers and self._headers_on_success):
            # method_response only adds RateLimit headers to admitted requests' answers
            self.method_response_only_for: frozenset[str] = frozenset()

        self._default_enforced = (policy.mode or ("enforce" if enforced else "report")) == "enforce"

        def tier(name: str, limit: RateLimit) -> tuple[str, RateLimit, bool]:
            return name, limit, _enforced(limit, self._default_enforced)

        self._common = [tier("account", policy.account)]
        if policy.stage is not None:
            self._common.append(tier("stage", policy.stage))
        self._routes = {key: tier("route", limit) for key, limit in policy.routes.items()}
        # route key -> (its tiers, and the same as BucketSpecs when none has a client key)
        self._by_route: dict[str, tuple[tuple[Tier, ...], tuple[BucketSpec, ...] | None]] = {}
        self._now = clock or time.monotonic

    @property
    def store(self) -> MemoryStore:
        return self._store

    def _client_key(self, ex: Exchange, parts: list[str]) -> str:
        values = []
        for part in parts:
            if part == "ip":
                peer = ex.flow.client_conn.peername[0] if ex.flow.client_conn.peername else None
                values.append(client_ip(peer, ex.request.headers.get_all("x-forwarded-for"), self._trusted))
            elif part == "client_cert_subject":
                # the verified client certificate's subject (mTLS); empty without one
                certs = ex.flow.client_conn.certificate_list
                values.append(",".join(f"{k}={v}" for k, v in certs[0].subject) if certs else "")
            else:
                values.append(ex.request.headers.get(part.removeprefix("header:"), ""))
        # Hashed: keys are stored and traced, and client values (tokens in headers) stay private.
        return hashlib.sha256("\x00".join(values).encode("utf-8", "surrogateescape")).hexdigest()[:16]

    def _route_tiers(self, route_key: str) -> tuple[tuple[Tier, ...], tuple[BucketSpec, ...] | None]:
        """Account, stage and route tiers for a route, built once: a tier without a client key is a
        ready ``BucketSpec``; a keyed one is ``(key prefix, tier, limit, enforced)``."""
        found = self._by_route.get(route_key)
        if found is None:
            raw = [(f"{self.prefix}:{name}", name, limit, on) for name, limit, on in self._common]
            if route_key in self._routes:
                _, limit, on = self._routes[route_key]
                raw.append((f"{self.prefix}:route:{route_key}", "route", limit, on))
            tiers = tuple(
                t if t[2].key else BucketSpec(t[0], t[1], t[2].rate, t[2].burst, t[3], evictable=False) for t in raw
            )
            ready = tuple(t for t in tiers if isinstance(t, BucketSpec))
            found = self._by_route[route_key] = (tiers, ready if len(ready) == len(tiers) else None)
        return found

    def specs(self, ex: Exchange) -> Sequence[BucketSpec]:
        """The buckets a request needs a token from: account, stage, route, then the key's plan."""
        route = ex.route
        route_key = route.key if route is not None else ""
        route_tiers, ready = self._route_tiers(route_key)
        match: KeyMatch | None = ex.vars.get(KEY_VAR)
        if match is None and ready is not None:
            return ready  # the common case: nothing to key per client or per API key
        tiers: list[Tier] = list(route_tiers)
        if match is not None:
            # keyed by key id (never the key): usage plans throttle per API key
            base = f"{self.prefix}:plan:{match.plan_name}:key:{match.key_id}"
            on = self._default_enforced
            if match.plan.throttle is not None:
                tiers.append((base, "plan", match.plan.throttle, _enforced(match.plan.throttle, on)))
            if route_key in match.plan.routes:
                limit = match.plan.routes[route_key]
                tiers.append((f"{base}:route:{route_key}", "plan_route", limit, _enforced(limit, on)))
        out = []
        for tier in tiers:
            if isinstance(tier, BucketSpec):
                out.append(tier)
                continue
            key, name, limit, enforced = tier
            if limit.key:
                key += ":" + self._client_key(ex, limit.key)
            # a client part makes the bucket one of many, evicted when least recently used
            out.append(BucketSpec(key, name, limit.rate, limit.burst, enforced, evictable=bool(limit.key)))
        return out

    def now(self) -> float:
        return self._now()

    def method_request(self, ex: Exchange) -> Reject | Flag | None:
        return self.finish(ex, self._store.acquire(self.specs(ex), self._now()))

    def finish(self, ex: Exchange, decision: Decision, store: str | None = None) -> Reject | Flag | None:
        # The trace of every tier, written out here rather than through a helper per tier: this
        # runs for every request. Tokens are cut (not rounded) to the thousandth: a bucket a hair
        # short of a token never shows 1.0 beside a refusal (and round() was a third of the
        # throttle's time per request). The tiers are a tuple, which the cyclic collector stops
        # tracking once it holds only plain dicts: with a list, the in-process benchmark's
        # response checkpoint cost 10 us more per request with the collector on (the same with it
        # off), with a tuple 3 us. Saved flows and mitmweb show either as a list.
        ex.details[self.name] = {
            "store": store or self._store.name,
            "tiers": tuple(
                [
                    {
                        "tier": r.spec.tier,
                        "key": r.spec.key,
                        "rate": r.spec.rate,
                        "burst": r.spec.burst,
                        "tokens_before": int(r.tokens_before * 1000) / 1000,
                        "tokens_after": int(r.tokens_after * 1000) / 1000,
                        "allowed": r.allowed,
                        "enforced": r.spec.enforced,
                    }
                    for r in decision.results
                ]
            ),
        }
        refused = decision.refused_by
        if refused is not None:
            retry = max(1, math.ceil(decision.retry_after))
            headers = _ratelimit_headers(decision) if self._headers else ()
            return Reject(
                "THROTTLED",
                reason="rate_limited",
                rule=f"throttle/{refused.spec.tier}",
                source=self.source,
                headers=(("retry-after", str(retry)), *headers),
            )
        if self._headers_on_success and self._headers:
            # computed only where they are sent: most admitted requests carry none
            ex.vars[RATELIMIT_VAR] = _ratelimit_headers(decision)
        for r in decision.results:  # a report-only tier that would have refused
            if not r.allowed and not r.spec.enforced:
                return Flag("rate_limited", rule=f"throttle/{r.spec.tier}", report_only=True)
        return None

    def method_response(self, ex: Exchange) -> None:
        headers = ex.vars.get(RATELIMIT_VAR)
        if headers and ex.response is not None and ex.rejection is None:
            for name, value in headers:
                ex.response.headers[name] = value


class RedisThrottle(Throttle):
    """The same tiers, decided in Redis; ``on_store_error`` decides while Redis is away."""

    def __init__(self, policy: ThrottlePolicy, api: ApiPolicy, source: str, *, enforced: bool) -> None:
        super().__init__(policy, api, source, enforced=enforced)
        self._redis = redis_store(
            policy.store, policy.password.reveal() if policy.password else None, policy.store_timeout
        )
        self._on_error = policy.on_store_error
        self._replicas = policy.replicas

    @property
    def redis(self) -> RedisStore:
        return self._redis

    @property
    def degraded(self) -> bool:
        return self._redis.degraded

    async def method_request(self, ex: Exchange) -> Reject | Flag | None:  # type: ignore[override]
        specs = self.specs(ex)
        try:
            decision = await self._redis.acquire(specs)
        except StoreUnavailable:
            if self._on_error == "deny":
                ex.details[self.name] = {"store": "redis", "store_error": True, "fallback": "deny"}
                return Reject("SERVICE_UNAVAILABLE", reason="store_unavailable", source=self.source)
            if self._on_error == "allow":
                ex.details[self.name] = {"store": "redis", "store_error": True, "fallback": "allow"}
                return Flag("store_unavailable")
            # local: each replica keeps its share of every bucket until Redis is back
            scaled = [replace(s, rate=s.rate / self._replicas, burst=max(1, s.burst // self._replicas)) for s in specs]
            result = self.finish(ex, self._store.acquire(scaled, self.now()), store="local")
            ex.details[self.name]["store_error"] = True
            return result
        return self.finish(ex, decision, store="redis")


_redis_stores: dict[tuple[str, str | None, float], RedisStore] = {}


def redis_store(url: str, password: str | None, timeout: float) -> RedisStore:
    """One pool per Redis URL for the life of the process: reloads reuse it."""
    key = (url, password, timeout)
    if key not in _redis_stores:
        _redis_stores[key] = RedisStore(url, password=password, timeout=timeout)
    return _redis_stores[key]


def make_throttle(policy: ThrottlePolicy, api: ApiPolicy, source: str, *, enforced: bool) -> Throttle:
    if policy.store == "memory":
        return Throttle(policy, api, source, enforced=enforced)
    return RedisThrottle(policy, api, source, enforced=enforced)


def _enforced(limit: RateLimit, default: bool) -> bool:
    return default if limit.mode is None else limit.mode == "enforce"


def _ratelimit_headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    """IETF RateLimit-Policy / RateLimit (draft-ietf-httpapi-ratelimit-headers) for the tightest tier."""
    enforced = [r for r in decision.results if r.spec.enforced]
    if not enforced:
        return ()
    tight = min(enforced, key=lambda r: (r.tokens_after, -r.retry_after))
    spec = tight.spec
    window = max(1, math.ceil(spec.burst / spec.rate))  # time to refill an empty bucket
    remaining = max(0, math.floor(tight.tokens_after))
    reset = 0 if tight.tokens_after >= 1 else max(1, math.ceil((1 - tight.tokens_after) / spec.rate))
    return (
        ("ratelimit-policy", f'"{spec.tier}";q={spec.burst};w={window}'),
        ("ratelimit", f'"{spec.tier}";r={remaining};t={reset}'),
    )
