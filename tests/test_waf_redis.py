"""WAF rate_based counters in a real Redis: the Lua window math, sharing, on_store_error, recovery."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from conftest import RedisServer, drive, free_port
from mitmproxy.test import tflow, tutils

from addons.throttle.redis_store import RedisStore, StoreUnavailable
from addons.waf.rate import MemoryRateStore, RedisRateStore


def web_acl(url: str, rule_id: str, limit: int, **extra: object) -> str:
    """A WebAcl whose one rate rule blocks more than ``limit`` requests a minute per client IP."""
    lines = [
        "kind: WebAcl",
        f"store: {url}",
        "store_timeout: 200ms",
        *(f"{k}: {json.dumps(v)}" for k, v in extra.items()),
        "rules:",
        f"  - id: {rule_id}",
        "    priority: 1",
        "    action: block",
        f"    statement: {{rate_based: {{limit: {limit}, window: 1m, key: [ip]}}}}",
    ]
    return "\n".join(lines) + "\n"


def req(path="/books"):
    return tflow.tflow(req=tutils.treq(path=path.encode(), headers=[(b"host", b"x")]))


def waf_entry(f):
    return next(
        e for e in f.metadata["sidegate"]["trace"] if e["plugin"] == "waf" and e["checkpoint"] == "method_request"
    )


def waf_of(gate):
    return next(s for s in gate.policy.plugins["method_request"] if s.name == "waf").method.__self__


async def status(gate):
    return (await drive(gate, req())).response.status_code


# -- the Lua script -----------------------------------------------------------------------------------


async def test_lua_window_counts_and_rolls_over_exactly_like_the_memory_store(redis_server):
    store = RedisRateStore(RedisStore(redis_server.url, timeout=1.0))
    memory = MemoryRateStore()
    # (time, expected count): 3 in window 0; window 1 starts with window 0 fully overlapping, then
    # weighs it by the overlap left; two windows later everything has aged out.
    steps = [(0.0, 1), (10.0, 2), (59.9, 3), (60.0, 4), (90.0, 3.5), (90.0, 4.5), (119.0, 4 + 3 / 60), (240.0, 1)]
    got = [await store.hit("waf:r:60:k", 60, at=at) for at, _ in steps]
    assert got == pytest.approx([count for _, count in steps], abs=1e-6)
    assert got == pytest.approx([memory.hit("k", 60.0, at) for at, _ in steps], abs=1e-6)
    ttl = await store.redis.call("PTTL", "sidegate:waf:r:60:k")
    assert 119_000 < ttl <= 120_000  # two windows
    assert await store.hit("waf:other:60:k", 60, at=240.0) == 1  # keys are independent
    await store.redis.close()


async def test_lua_uses_redis_time_and_replicas_share_one_counter(redis_server):
    one = RedisRateStore(RedisStore(redis_server.url, timeout=1.0))
    two = RedisRateStore(RedisStore(redis_server.url, timeout=1.0))  # another process's pool
    got = [await store.hit("waf:r:60:ip", 60) for store in (one, two, one, two)]
    # the window may roll over between two calls: the previous window then still counts ~fully
    assert got == pytest.approx([1, 2, 3, 4], abs=0.01)
    assert redis_server.keys() == ["sidegate:waf:r:60:ip"]
    await one.redis.close()
    await two.redis.close()


# -- through the gateway ----------------------------------------------------------------------------


async def test_rate_rule_in_redis_blocks_on_the_traffic_of_both_replicas(make_gateway, backend, redis_server):
    files = {"waf.yaml": web_acl(redis_server.url, "shared-rate", 3)}
    _, one = make_gateway(files, upstream=backend.url)
    _, two = make_gateway(files, upstream=backend.url)  # a second replica on the same Redis
    codes = [await status(gate) for gate in (one, two, one, two, one)]
    assert codes == [200, 200, 200, 403, 403]
    f = await drive(two, req())
    assert f.response.status_code == 403 and json.loads(f.response.content) == {"message": "Forbidden"}
    entry = waf_entry(f)
    assert entry["rule"] == "shared-rate"
    [rate] = entry["detail"]["rate"]
    assert (rate["store"], rate["limit"], "store_error" in rate) == ("redis", 3, False)
    assert rate["count"] == pytest.approx(6, abs=0.05)  # the sixth request, whichever replica got it
    assert [k.split(":")[:4] for k in redis_server.keys()] == [["sidegate", "waf", "shared-rate", "60"]]


async def test_acl_without_a_redis_rate_rule_never_awaits(make_gateway, backend, redis_server):
    import inspect

    no_rate = "kind: WebAcl\nstore: {url}\nrules:\n  - {{id: a, priority: 1, action: block, statement: {{byte_match: {{field: uri_path, value: /evil}}}}}}\n"
    _, gate = make_gateway({"waf.yaml": no_rate.format(url=redis_server.url)}, upstream=backend.url)
    slot = next(s for s in gate.policy.plugins["method_request"] if s.name == "waf")
    assert slot.is_async is False and not inspect.iscoroutinefunction(waf_of(gate).method_request_body)
    assert waf_of(gate).degraded is None  # no shared store: no sidegate_store_degraded gauge
    _, shared = make_gateway({"waf.yaml": web_acl(redis_server.url, "async-rate", 3)}, upstream=backend.url)
    slot = next(s for s in shared.policy.plugins["method_request"] if s.name == "waf")
    assert slot.is_async is True and inspect.iscoroutinefunction(waf_of(shared).method_request_body)


@pytest.mark.parametrize(
    ("mode", "codes"), [("allow", [200] * 4), ("deny", [403] * 4), ("local", [200, 200, 403, 403])]
)
async def test_redis_down_follows_on_store_error(make_gateway, backend, mode, codes, caplog):
    caplog.set_level(logging.INFO, logger="sidegate")
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    policy = web_acl(url, f"down-{mode}", 4, on_store_error=mode, replicas=2)
    _, gate = make_gateway({"waf.yaml": policy}, upstream=backend.url)
    flows = [await drive(gate, req()) for _ in range(4)]
    assert [f.response.status_code for f in flows] == codes
    rate = waf_entry(flows[0])["detail"]["rate"][0]
    assert rate["store_error"] is True and rate["fallback"] == mode
    assert rate["store"] == ("local" if mode == "local" else "redis")
    if mode == "local":  # each of 2 replicas keeps half of the limit
        assert waf_entry(flows[2])["detail"]["rate"][0]["limit"] == 2
    if mode == "deny":  # the rule matched: its action applied
        assert waf_entry(flows[0])["rule"] == f"down-{mode}"
    else:
        assert waf_entry(flows[0])["outcome"] == "flag" and waf_entry(flows[0])["reason"] == "store_unavailable"
    warnings = [r for r in caplog.records if "WAF rate store redis://127.0.0.1" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING and "unavailable" in warnings[0].getMessage()
    metrics = gate.metrics.render(gate.policy.instances).decode()
    assert 'sidegate_store_degraded{plugin="waf"} 1.0' in metrics


async def test_slow_redis_times_out_into_the_fallback(make_gateway, backend, redis_server):
    import threading
    import time

    import redis as sync_redis

    policy = web_acl(redis_server.url, "slow-rate", 100, on_store_error="deny")
    _, gate = make_gateway({"waf.yaml": policy}, upstream=backend.url)
    assert await status(gate) == 200
    client = sync_redis.Redis(host="127.0.0.1", port=redis_server.port)
    sleeper = threading.Thread(target=lambda: client.execute_command("DEBUG", "SLEEP", "1.5"))
    sleeper.start()
    try:
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        f = await drive(gate, req())
        elapsed = time.monotonic() - t0
    finally:
        sleeper.join()
        client.close()
    assert f.response.status_code == 403  # deny: the rate rule matched while Redis could not count
    assert waf_entry(f)["detail"]["rate"] == [
        {"rule": "slow-rate", "store": "redis", "store_error": True, "fallback": "deny"}
    ]
    assert elapsed < 1.0  # 200 ms store_timeout, not 1.5 s


async def test_recovers_when_redis_comes_back(make_gateway, backend, caplog):
    caplog.set_level(logging.INFO, logger="sidegate")
    port = free_port()
    _, gate = make_gateway(
        {"waf.yaml": web_acl(f"redis://127.0.0.1:{port}/0", "recover-rate", 2)}, upstream=backend.url
    )
    waf = waf_of(gate)
    waf._shared.store.redis._retry_interval = 0.2
    assert waf_entry(await drive(gate, req()))["detail"]["rate"][0]["store_error"] is True
    assert waf.degraded is True
    server = RedisServer(port)
    try:
        await asyncio.sleep(0.3)
        flows = [await drive(gate, req()) for _ in range(3)]
        assert [f.response.status_code for f in flows] == [200, 200, 403]  # counted in Redis again
        assert [waf_entry(f)["detail"]["rate"][0]["store"] for f in flows] == ["redis"] * 3
        assert server.keys()
    finally:
        server.stop()
    assert waf.degraded is False
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if "WAF rate store" in r.getMessage()]
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO]
    assert "is back" in messages[1][1]


class ScriptedRedis:
    """Stands in for RedisStore: the test answers each run_script call when it likes."""

    url_safe = "redis://scripted"

    def __init__(self):
        self.calls = []

    async def run_script(self, script, keys, args):
        answer = asyncio.get_running_loop().create_future()
        self.calls.append(answer)
        return await answer


async def test_only_a_call_sent_after_the_failure_says_redis_is_back(caplog):
    caplog.set_level(logging.INFO, logger="sidegate")
    redis = ScriptedRedis()
    store = RedisRateStore(redis)
    late = asyncio.ensure_future(store.hit("waf:r:60:k", 60))  # in flight when Redis fails
    failing = asyncio.ensure_future(store.hit("waf:r:60:k", 60))
    await asyncio.sleep(0)
    redis.calls[1].set_exception(StoreUnavailable("timeout"))
    with pytest.raises(StoreUnavailable):
        await failing
    redis.calls[0].set_result("2")
    assert await late == 2.0
    assert store.degraded is True  # an answer to a call sent before the failure proves nothing
    fresh = asyncio.ensure_future(store.hit("waf:r:60:k", 60))
    await asyncio.sleep(0)
    redis.calls[2].set_result("3")
    assert await fresh == 3.0
    assert store.degraded is False
    levels = [r.levelno for r in caplog.records if "WAF rate store redis://scripted" in r.getMessage()]
    assert levels == [logging.WARNING, logging.INFO]


def test_waf_redis_password_must_be_a_secret_reference(tmp_path):
    from conftest import write_policies

    from addons.policy.errors import PolicyError
    from addons.policy.policyset import load_policy_set

    write_policies(tmp_path / "policies", {"waf.yaml": "kind: WebAcl\nstore: redis://:hunter2@127.0.0.1:6379/0\n"})
    with pytest.raises(PolicyError) as e:
        load_policy_set(tmp_path / "policies")
    assert "store" in str(e.value) and "not in the URL" in str(e.value) and "hunter2" not in str(e.value)
