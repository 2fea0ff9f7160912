"""What ``sidegate keys`` shows: each API key's plan, remaining quota and bucket state, read from the
running sidecar's stores through the admin endpoint (``/keys``)."""

from __future__ import annotations

import time
from typing import Any

from addons.throttle import RedisThrottle, Throttle
from addons.throttle.buckets import refill
from addons.throttle.plans import ApiKeys, period_end, period_start


async def describe_keys(instances: tuple[object, ...]) -> list[dict[str, Any]]:
    keys = next((p for p in instances if isinstance(p, ApiKeys)), None)
    throttle = next((p for p in instances if isinstance(p, Throttle)), None)
    if keys is None:
        return []
    out = []
    for key_id, key in keys.keys.items():
        plan = keys.plans[key.plan]
        entry: dict[str, Any] = {"key_id": key_id, "plan": key.plan, "enabled": key.enabled, "quota": None,
                                 "buckets": []}  # fmt: skip
        if plan.quota is not None:
            now = keys.now()
            start_time = period_start(plan.quota.period, now)
            start = start_time.isoformat()
            store = keys.shared or keys.quotas
            used = await store.aused(key_id, start)
            first = await store.afirst_period(key_id, start) if used else None
            limit = plan.quota.limit - (plan.quota.offset if first in (None, start) else 0)
            entry["quota"] = {
                "period": plan.quota.period,
                "limit": limit,
                "used": used,
                "remaining": max(0, limit - used),
                "resets_at": period_end(plan.quota.period, start_time).isoformat(),
            }
        if throttle is not None:
            tiers = []
            base = f"{throttle.prefix}:plan:{key.plan}:key:{key_id}"
            if plan.throttle is not None:
                tiers.append(("plan", base, plan.throttle.rate, plan.throttle.burst))
            tiers += [("plan_route", f"{base}:route:{r}", lim.rate, lim.burst) for r, lim in plan.routes.items()]
            for tier, bucket_key, rate, burst in tiers:
                tokens = await _tokens(throttle, bucket_key, rate, burst)
                entry["buckets"].append({"tier": tier, "key": bucket_key, "rate": rate, "burst": burst,
                                         "tokens": round(tokens, 3)})  # fmt: skip
        out.append(entry)
    return out


async def _tokens(throttle: Throttle, key: str, rate: float, burst: int) -> float:
    if isinstance(throttle, RedisThrottle):
        state = await throttle.redis.peek(key)
        now = time.time()  # Redis stamps buckets with its TIME (wall clock)
    else:
        state = throttle.store.peek(key)
        now = throttle.now()
    return float(burst) if state is None else refill(state[0], state[1], now, rate, burst)


def render(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no API keys (no kind: UsagePlans document is loaded)"
    lines = [f"{'key':<20} {'plan':<12} {'enabled':<8} {'quota':<28} buckets"]
    for e in entries:
        q = e["quota"]
        quota = f"{q['remaining']}/{q['limit']} left ({q['period']})" if q else "-"
        buckets = ", ".join(f"{b['tier']} {b['tokens']:g}/{b['burst']}" for b in e["buckets"]) or "-"
        lines.append(f"{e['key_id']:<20} {e['plan']:<12} {e['enabled']!s:<8} {quota:<28} {buckets}")
    return "\n".join(lines)
