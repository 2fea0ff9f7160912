"""Throttle tiers in a real Redis: the same semantics, atomic, and the on_store_error modes."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import RedisServer, drive, free_port
from mitmproxy.test import tflow, tutils

API = """
    kind: Api
    name: shop
    stage: prod
    routes:
      GET /books: {}
"""


def throttle(url, **extra):
    lines = ["kind: Throttle", f"store: {url}", "store_timeout: 200ms"] + [
        f"{k}: {json.dumps(v)}" for k, v in extra.items()
    ]
    return "\n".join(lines) + "\n"


def req(path="/books"):
    return tflow.tflow(req=tutils.treq(path=path.encode(), headers=[(b"host", b"x")]))


def throttle_entry(f):
    return next(
        e for e in f.metadata["sidegate"]["trace"] if e["plugin"] == "throttle" and e["checkpoint"] == "method_request"
    )


async def test_redis_tiers_admit_exactly_burst_and_refuse_without_spending(make_gateway, backend, redis_server):
    policy = throttle(
        redis_server.url, account={"rate": 0.001, "burst": 1000}, routes={"GET /books": {"rate": 0.01, "burst": 3}}
    )
    _, gate = make_gateway({"api.yaml": API, "t.yaml": policy}, upstream=backend.url)
    codes = [(await drive(gate, req())).response.status_code for _ in range(6)]
    assert codes == [200, 200, 200, 429, 429, 429]
    f = await drive(gate, req())
    entry = throttle_entry(f)
    assert entry["detail"]["store"] == "redis"
    tiers = {t["tier"]: t for t in entry["detail"]["tiers"]}
    assert tiers["account"]["tokens_before"] == pytest.approx(997, abs=0.5)  # refused requests took nothing
    assert f.response.headers["retry-after"] == "100"
    assert redis_server.keys() == ["sidegate:shop:prod:account", "sidegate:shop:prod:route:GET /books"]


async def test_concurrent_requests_are_decided_atomically(make_gateway, backend, redis_server):
    policy = throttle(redis_server.url, routes={"GET /books": {"rate": 0.01, "burst": 10}})
    _, gate = make_gateway({"api.yaml": API, "t.yaml": policy}, upstream=backend.url)
    flows = await asyncio.gather(*(drive(gate, req()) for _ in range(40)))
    assert sorted(f.response.status_code for f in flows) == [200] * 10 + [429] * 30


@pytest.mark.parametrize(("mode", "status"), [("allow", 200), ("deny", 503), ("local", 200)])
async def test_redis_down_follows_on_store_error(make_gateway, backend, mode, status, caplog):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    policy = throttle(url, on_store_error=mode, replicas=2, routes={"GET /books": {"rate": 0.01, "burst": 4}})
    _, gate = make_gateway({"api.yaml": API, "t.yaml": policy}, upstream=backend.url)
    f = await drive(gate, req())
    assert f.response.status_code == status
    entry = throttle_entry(f)
    assert entry["detail"]["store_error"] is True
    if mode == "deny":
        assert json.loads(f.response.content) == {"message": "Service Unavailable"}
        assert f.response.headers["x-amzn-ErrorType"] == "ServiceUnavailableException"
    if mode == "local":
        # each of 2 replicas keeps half of the burst
        codes = [(await drive(gate, req())).response.status_code for _ in range(3)]
        assert codes == [200, 429, 429]
    assert any(
        "throttle store redis://127.0.0.1" in r.getMessage() and "unavailable" in r.getMessage() for r in caplog.records
    )
    metrics = gate.metrics.render().decode()
    if mode == "allow":
        assert 'sidegate_rejections_total{enforced="true",plugin="throttle",reason="store_unavailable"} 1.0' in metrics


async def test_recovers_when_redis_comes_back(make_gateway, backend):
    port = free_port()
    policy = throttle(
        f"redis://127.0.0.1:{port}/0", on_store_error="allow", routes={"GET /books": {"rate": 1, "burst": 5}}
    )
    _, gate = make_gateway({"api.yaml": API, "t.yaml": policy}, upstream=backend.url)
    slot = next(s for s in gate.policy.plugins["method_request"] if s.name == "throttle")
    store = slot.method.__self__.redis  # the RedisThrottle's store
    store._retry_interval = 0.2
    assert throttle_entry(await drive(gate, req()))["detail"]["store_error"] is True
    server = RedisServer(port)
    try:
        await asyncio.sleep(0.3)
        f = await drive(gate, req())
        assert throttle_entry(f)["detail"]["store"] == "redis" and "store_error" not in throttle_entry(f)["detail"]
        assert server.keys()
    finally:
        server.stop()


def test_redis_password_must_be_a_secret_reference(tmp_path):
    from conftest import write_policies

    from addons.policy.errors import PolicyError
    from addons.policy.policyset import load_policy_set

    write_policies(tmp_path / "policies", {"t.yaml": "kind: Throttle\nstore: redis://:hunter2@127.0.0.1:6379/0\n"})
    with pytest.raises(PolicyError) as e:
        load_policy_set(tmp_path / "policies")
    assert "not in the URL" in str(e.value) and "hunter2" not in str(e.value)


KEY = "partnerKEYplanted12345678"
PLANS = """
    kind: UsagePlans
    quota_file: state/q.sqlite
    plans:
      gold: {quota: {limit: 3, period: MONTH}}
    keys:
      partner: {value: {secret_env: PARTNER_KEY}, plan: gold}
"""


async def test_quotas_live_in_redis_and_are_shared_by_replicas(
    make_gateway, backend, redis_server, monkeypatch, tmp_path
):
    monkeypatch.setenv("PARTNER_KEY", KEY)
    api = API.replace("GET /books: {}", "GET /books: {api_key_required: true}")
    files = {"api.yaml": api, "plans.yaml": PLANS, "t.yaml": throttle(redis_server.url)}
    _, one = make_gateway(files, upstream=backend.url)
    _, two = make_gateway(files, upstream=backend.url)  # a second replica on the same Redis

    def keyed():
        return tflow.tflow(req=tutils.treq(path=b"/books", headers=[(b"host", b"x"), (b"x-api-key", KEY.encode())]))

    codes = [(await drive(gate, keyed())).response.status_code for gate in (one, two, one, two)]
    assert codes == [200, 200, 200, 429]
    last = await drive(two, keyed())
    assert json.loads(last.response.content) == {"message": "Limit Exceeded"}
    assert [k for k in redis_server.keys("sidegate:quota:*")] == [
        f"sidegate:quota:partner:{next(e for e in last.metadata['sidegate']['trace'] if e['plugin'] == 'api_keys')['detail']['period_start']}"
    ]
    assert KEY not in "".join(redis_server.keys())


async def test_slow_redis_times_out_into_the_fallback(make_gateway, backend, redis_server):
    import threading
    import time

    import redis as sync_redis

    policy = throttle(redis_server.url, on_store_error="local", routes={"GET /books": {"rate": 1, "burst": 5}})
    _, gate = make_gateway({"api.yaml": API, "t.yaml": policy}, upstream=backend.url)
    assert throttle_entry(await drive(gate, req()))["detail"]["store"] == "redis"
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
    assert f.response.status_code == 200
    assert throttle_entry(f)["detail"]["store"] == "local" and elapsed < 1.0  # 200 ms store_timeout, not 1.5 s


async def test_store_stays_degraded_while_the_breaker_skips_redis():
    from addons.throttle.buckets import BucketSpec
    from addons.throttle.redis_store import RedisStore, StoreUnavailable

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.1, retry_interval=5.0)
    spec = [BucketSpec("k", "route", 1.0, 1)]
    with pytest.raises(StoreUnavailable):
        await store.acquire(spec)
    store.degraded = False  # e.g. a call that started before the breaker opened came back fine
    with pytest.raises(StoreUnavailable, match="circuit open"):
        await store.acquire(spec)
    assert store.degraded is True  # skipping Redis is still a degraded state
    await store.close()


def evalsha_calls(server):
    import redis

    client = redis.Redis(port=server.port)
    try:
        return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    finally:
        client.close()


async def test_requests_arriving_together_share_one_round_trip_and_stay_exact(redis_server):
    from addons.throttle.buckets import BucketSpec
    from addons.throttle.redis_store import RedisStore

    store = RedisStore(redis_server.url, timeout=0.5)
    specs = [BucketSpec("acct", "account", 0.001, 1000), BucketSpec("route", "route", 0.001, 20)]
    decisions = await asyncio.gather(*(store.acquire(specs) for _ in range(50)))
    await store.close()
    assert [d.admitted for d in decisions] == [True] * 20 + [False] * 30  # in arrival order, exactly the burst
    # tokens seen by each request follow one another: 20, 19, ... 1, then 0 for every refused one
    assert [d.results[1].tokens_before for d in decisions[:20]] == pytest.approx([20 - i for i in range(20)], abs=0.01)
    assert all(d.results[1].tokens_before == pytest.approx(0, abs=0.01) for d in decisions[20:])
    assert decisions[-1].results[0].tokens_before == pytest.approx(980, abs=0.1)  # refused requests took nothing
    assert evalsha_calls(redis_server) < 50  # batched: the first alone, the rest together


@pytest.mark.parametrize("eager", [False, True], ids=["tasks", "eager-tasks"])
async def test_a_failed_batch_fails_each_waiting_request_and_the_next_batch_goes_through(redis_server, eager):
    from addons.throttle.buckets import BucketSpec
    from addons.throttle.redis_store import RedisStore, StoreUnavailable

    if eager:  # as mitmproxy runs them: a batch that fails without waiting ends inside ensure_future
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)

    store = RedisStore(redis_server.url, timeout=0.5, retry_interval=0.0)
    specs = [BucketSpec("k", "route", 1.0, 100)]
    await store.acquire(specs)
    real = store._script

    async def broken(**kwargs):
        raise ValueError("unexpected")

    store._script = broken
    results = await asyncio.wait_for(
        asyncio.gather(*(store.acquire(specs) for _ in range(5)), return_exceptions=True), 5
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)  # nobody left waiting
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(store.acquire(specs), 2)  # a new flush starts after a finished one
    store._script = real
    decision = await store.acquire(specs)
    assert decision.admitted
    await store.close()
