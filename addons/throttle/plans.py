"""API keys, usage plans and quotas. Checkpoint: method request (keys before the throttle tiers,
the quota commit after them). Policy: ``kind: UsagePlans`` and ``api_key_required`` on Api routes.

A key-required route needs ``x-api-key`` naming an enabled key whose usage plan covers the stage;
otherwise 403 ``{"message":"Forbidden"}`` (INVALID_API_KEY). The plan's per-key throttle and
per-route overrides join the throttle tiers (addons/throttle). Quotas count admitted requests per
key and period; exhausted: 429 ``{"message":"Limit Exceeded"}`` (QUOTA_EXCEEDED).

Quota periods are calendar periods in UTC: DAY from 00:00, WEEK from Monday 00:00, MONTH from
the 1st 00:00. ``offset`` is subtracted from the limit in the first period a key is seen.
Counters live in a SQLite file, so they survive restarts. Keys are compared by SHA-256: the key
id, never the key, appears in traces, logs, metrics and saved flows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addons.decision import Exchange, Reject
from addons.policy.models import ApiPolicy, UsagePlan, UsagePlansPolicy
from addons.policy.types import Secret
from addons.throttle.redis_store import RedisStore, StoreUnavailable

KEY_VAR = "usage_plan_key"


@dataclass(frozen=True, slots=True)
class KeyMatch:
    key_id: str
    plan_name: str
    plan: UsagePlan
    header: str = "x-api-key"  # where the key came from ($context.identity.apiKey)


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    day = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "DAY":
        return day
    if period == "WEEK":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: str, start: dt.datetime) -> dt.datetime:
    if period == "DAY":
        return start + dt.timedelta(days=1)
    if period == "WEEK":
        return start + dt.timedelta(days=7)
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


class QuotaStore:
    """Quota counters in SQLite (WAL). One connection, used from mitmproxy's single thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()  # `sidegate keys` may read from another thread
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS quota (key_id TEXT, period_start TEXT, used INTEGER, "
            "PRIMARY KEY (key_id, period_start))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS first_seen (key_id TEXT PRIMARY KEY, period_start TEXT)")

    def used(self, key_id: str, start: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT used FROM quota WHERE key_id = ? AND period_start = ?", (key_id, start)
            ).fetchone()
        return int(row[0]) if row else 0

    def first_period(self, key_id: str, start: str) -> str:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO first_seen VALUES (?, ?)", (key_id, start))
            row = self._db.execute("SELECT period_start FROM first_seen WHERE key_id = ?", (key_id,)).fetchone()
        return str(row[0])

    def add(self, key_id: str, start: str) -> int:
        with self._lock:
            self._db.execute(
                "INSERT INTO quota VALUES (?, ?, 1) ON CONFLICT(key_id, period_start) DO UPDATE SET used = used + 1",
                (key_id, start),
            )
        return self.used(key_id, start)

    def close(self) -> None:
        self._db.close()

    # the asynchronous face both stores share (SQLite answers at once; it is a local file)
    async def aused(self, key_id: str, start: str) -> int:
        return self.used(key_id, start)

    async def afirst_period(self, key_id: str, start: str) -> str:
        return self.first_period(key_id, start)

    async def aadd(self, key_id: str, start: str, expires_at: float) -> int:
        return self.add(key_id, start)


class RedisQuotaStore:
    """Quota counters in Redis (shared by replicas): one counter per key and period, expiring a
    day after the period ends."""

    def __init__(self, redis: RedisStore) -> None:
        self._redis = redis

    def _key(self, key_id: str, start: str) -> str:
        return f"sidegate:quota:{key_id}:{start}"

    async def aused(self, key_id: str, start: str) -> int:
        value = await self._redis.call("GET", self._key(key_id, start))
        return int(value) if value is not None else 0

    async def afirst_period(self, key_id: str, start: str) -> str:
        key = f"sidegate:quota-first:{key_id}"
        await self._redis.call("SET", key, start, "NX")
        return str(await self._redis.call("GET", key))

    async def aadd(self, key_id: str, start: str, expires_at: float) -> int:
        key = self._key(key_id, start)
        value = await self._redis.call("INCR", key)
        await self._redis.call("EXPIREAT", key, int(expires_at) + 86400)
        return int(value)


QuotaBackend = QuotaStore | RedisQuotaStore


class ApiKeys:
    """Finds and checks the key; checks (without spending) the quota. Runs before the throttle."""

    name = "api_keys"

    def __init__(
        self, policy: UsagePlansPolicy, api: ApiPolicy, source: str, quotas: QuotaStore,
        wall_clock: Callable[[], float] | None = None, shared: RedisQuotaStore | None = None,
        on_store_error: str = "allow",
    ) -> None:  # fmt: skip
        self.source = source
        self._header = policy.header
        self._stage = api.stage
        self._required = frozenset(k for k, r in api.routes.items() if r.api_key_required)
        self.plans = policy.plans
        self._by_digest: dict[str, tuple[str, str, bool]] = {}
        for key_id, key in policy.keys.items():
            digest = key.value.sha256 if not isinstance(key.value, Secret) else _digest(key.value.reveal())
            self._by_digest[digest] = (key_id, key.plan, key.enabled)
        self.quotas = quotas  # SQLite: the store, or the fallback of a shared one
        self.shared = shared  # Redis, when the throttle store is Redis
        self.on_store_error = on_store_error
        self._wall = wall_clock
        self.keys = policy.keys

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._wall() if self._wall else time.time(), dt.UTC)

    async def quota_call(self, ex: Exchange, method: str, *args: Any) -> Any:
        """Ask the shared store, or follow on_store_error: allow (skip), deny (503), local (SQLite)."""
        if self.shared is not None:
            try:
                return await getattr(self.shared, method)(*args)
            except StoreUnavailable:
                ex.details.setdefault(self.name, {})["store_error"] = True
                if self.on_store_error == "allow":
                    return None
                if self.on_store_error == "deny":
                    raise
        return await getattr(self.quotas, method)(*args)

    async def method_request(self, ex: Exchange) -> Reject | None:
        route = ex.route
        if route is None or route.key not in self._required:
            return None  # keys are ignored where not required, as API Gateway does
        sent = ex.request.headers.get(self._header)
        found = self._by_digest.get(_digest(sent)) if sent else None
        if sent:
            # The backend still receives the key; what sidegate records (the saved flow, mitmweb)
            # shows only the key id.
            ex.redact_headers[self._header] = f"[redacted: key {found[0]}]" if found else "[redacted: unknown key]"
        if found is None:
            return self._invalid(ex, "api_key_missing" if not sent else "api_key_unknown")
        key_id, plan_name, enabled = found
        ex.details[self.name] = {"key_id": key_id, "plan": plan_name}
        if not enabled:
            return self._invalid(ex, "api_key_disabled")
        plan = self.plans[plan_name]
        if "*" not in plan.stages and self._stage not in plan.stages:
            return self._invalid(ex, "api_key_not_in_plan")
        ex.vars[KEY_VAR] = KeyMatch(key_id, plan_name, plan, self._header)
        if plan.quota is not None:
            start = period_start(plan.quota.period, self.now()).isoformat()
            try:
                first = await self.quota_call(ex, "afirst_period", key_id, start)
                used = await self.quota_call(ex, "aused", key_id, start)
            except StoreUnavailable:
                return Reject("SERVICE_UNAVAILABLE", reason="store_unavailable", source=self.source)
            if used is None:  # store away and on_store_error: allow
                return None
            limit = plan.quota.limit - (plan.quota.offset if first == start else 0)
            ex.details[self.name].update({"quota_limit": limit, "quota_used": used, "period_start": start})
            if used >= limit:
                return Reject("QUOTA_EXCEEDED", reason="quota_exceeded", rule=f"plan/{plan_name}", source=self.source)
        return None

    def _invalid(self, ex: Exchange, reason: str) -> Reject:
        return Reject("INVALID_API_KEY", reason=reason, source=self.source)


class QuotaCommit:
    """Spends one unit of quota once every throttle tier admitted the request."""

    name = "quota"

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys
        self.source = keys.source

    async def method_request(self, ex: Exchange) -> None:
        match: KeyMatch | None = ex.vars.get(KEY_VAR)
        if match is None or match.plan.quota is None:
            return None
        period = match.plan.quota.period
        start_time = period_start(period, self._keys.now())
        start = start_time.isoformat()
        try:
            used = await self._keys.quota_call(
                ex, "aadd", match.key_id, start, period_end(period, start_time).timestamp()
            )
        except StoreUnavailable:
            used = None  # the request was already admitted; the unit goes uncounted, as on_store_error says
        ex.details[self.name] = {"key_id": match.key_id, "quota_used": used}
        return None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
