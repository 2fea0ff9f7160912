"""Tiered token buckets with a fake clock: burst, refill, fractions, tiers, headers, keys, report mode."""

from __future__ import annotations

import ipaddress
import json

import pytest
from conftest import drive
from mitmproxy.test import tflow, tutils

from addons.clientip import client_ip
from addons.throttle.buckets import BucketSpec, MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(key="k", rate=1.0, burst=1, enforced=True, tier="route"):
    return BucketSpec(key, tier, rate, burst, enforced)


def test_new_bucket_starts_full_and_admits_exactly_burst():
    store = MemoryStore()
    results = [store.acquire([spec(rate=1, burst=5)], 0.0).admitted for _ in range(7)]
    assert results == [True] * 5 + [False] * 2


def test_refill_is_continuous_at_the_rate():
    store = MemoryStore()
    for _ in range(5):
        assert store.acquire([spec(rate=2, burst=5)], 0.0).admitted
    assert not store.acquire([spec(rate=2, burst=5)], 0.4).admitted  # 0.8 tokens
    assert store.acquire([spec(rate=2, burst=5)], 0.5).admitted  # 1.0 token
    assert not store.acquire([spec(rate=2, burst=5)], 0.5).admitted
    decision = store.acquire([spec(rate=2, burst=5)], 100.0)
    assert decision.admitted and decision.results[0].tokens_before == 5.0  # never above burst


def test_fractional_rate_and_retry_after():
    store = MemoryStore()
    assert store.acquire([spec(rate=0.5, burst=1)], 0.0).admitted
    refused = store.acquire([spec(rate=0.5, burst=1)], 0.5)
    assert not refused.admitted and refused.retry_after == pytest.approx(1.5)
    assert store.acquire([spec(rate=0.5, burst=1)], 2.0).admitted


def test_a_request_refused_by_one_tier_consumes_nothing_from_the_others():
    store = MemoryStore()
    wide, narrow = spec("wide", rate=100, burst=100, tier="account"), spec("narrow", rate=1, burst=2)
    outcomes = [store.acquire([wide, narrow], 0.0).admitted for _ in range(10)]
    assert outcomes == [True, True] + [False] * 8
    assert store.peek("wide")[0] == 98.0  # only the two admitted requests took tokens
    assert store.peek("narrow")[0] == 0.0


def test_report_only_bucket_never_decides_and_takes_a_token_only_when_it_has_one():
    store = MemoryStore()
    shadow = spec("shadow", rate=1, burst=1, enforced=False)
    first = store.acquire([shadow, spec("real", rate=10, burst=10)], 0.0)
    second = store.acquire([shadow, spec("real", rate=10, burst=10)], 0.0)
    assert first.admitted and second.admitted
    assert first.results[0].allowed and not second.results[0].allowed
    assert store.peek("shadow")[0] == 0.0 and store.peek("real")[0] == 8.0


def test_lru_eviction_bounds_memory_and_an_evicted_bucket_comes_back_full():
    store = MemoryStore(max_buckets=100)
    store.acquire([spec("first", burst=3)], 0.0)
    for i in range(150):
        store.acquire([spec(f"client-{i}")], 0.0)
    assert len(store) == 100
    assert store.peek("first") is None
    assert store.acquire([spec("first", burst=3)], 0.0).results[0].tokens_before == 3.0


def test_the_policys_own_buckets_are_never_evicted_and_do_not_count_against_the_bound():
    store = MemoryStore(max_buckets=100)
    route = BucketSpec("shop:prod:route:GET /books", "route", 0.001, 3, evictable=False)
    store.acquire([route], 0.0)
    for i in range(150):  # a flood of new clients, each with a bucket of its own
        store.acquire([spec(f"client-{i}")], 0.0)
    assert store.peek(route.key) == (2.0, 0.0)  # kept, with the token it gave
    assert (len(store), store.evictable) == (101, 100)  # 100 client buckets (the bound) and the route's


def test_a_bucket_found_again_is_changed_in_place():
    store = MemoryStore(max_buckets=100)  # one shard
    store.acquire([spec("a", burst=5)], 0.0)
    held = store._shards[0]["a"]
    store.acquire([spec("a", burst=5)], 1.0)
    assert store._shards[0]["a"] is held and held == [4.0, 1.0]  # 5 - 1, refilled by 1, - 1


TRUSTED = [ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.5", ["1.2.3.4"], "203.0.113.5"),  # untrusted peer: its XFF is ignored
        ("10.0.0.2", ["1.2.3.4"], "1.2.3.4"),
        ("10.0.0.2", ["1.2.3.4, 10.0.0.9"], "1.2.3.4"),  # trusted hops skipped from the right
        ("10.0.0.2", ["9.9.9.9, 1.2.3.4"], "1.2.3.4"),  # a client-supplied left part is not believed
        ("10.0.0.2", ["garbage, 10.0.0.9"], "10.0.0.9"),
        ("10.0.0.2", [], "10.0.0.2"),
    ],
)
def test_client_ip_behind_trusted_proxies(peer, xff, expected):
    assert client_ip(peer, xff, TRUSTED) == expected


API = """
    kind: Api
    name: shop
    stage: prod
    routes:
      GET /books: {}
      GET /authors: {}
"""


def throttle(**body):
    lines = ["kind: Throttle"] + [f"{k}: {json.dumps(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr("addons.throttle.time", type("FakeTime", (), {"monotonic": staticmethod(c)}))
    return c


def decision(f):
    return next(
        e for e in f.metadata["sidegate"]["trace"] if e["plugin"] == "throttle" and e["checkpoint"] == "method_request"
    )


def req(path="/books", peer="127.0.0.1", **headers):
    f = tflow.tflow(
        req=tutils.treq(
            path=path.encode(),
            headers=[(b"host", b"x")] + [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        )
    )
    f.client_conn.peername = (peer, 40000)
    return f


async def test_route_tier_refuses_with_429_retry_after_and_ratelimit_headers(make_gateway, backend, clock):
    _, gate = make_gateway(
        {"api.yaml": API, "t.yaml": throttle(routes={"GET /books": {"rate": 0.5, "burst": 2}})}, upstream=backend.url
    )
    statuses = [(await drive(gate, req())).response.status_code for _ in range(2)]
    f = await drive(gate, req())
    assert statuses == [200, 200] and f.response.status_code == 429
    assert json.loads(f.response.content) == {"message": "Too Many Requests"}
    assert f.response.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
    assert f.response.headers["retry-after"] == "2"
    assert f.response.headers["ratelimit-policy"] == '"route";q=2;w=4'
    assert f.response.headers["ratelimit"] == '"route";r=0;t=2'
    assert len(backend.seen) == 2
    entry = decision(f)
    assert (entry["plugin"], entry["reason"], entry["rule"]) == ("throttle", "rate_limited", "throttle/route")
    tiers = {t["tier"]: t for t in entry["detail"]["tiers"]}
    assert tiers["route"] == {
        "tier": "route",
        "key": "shop:prod:route:GET /books",
        "rate": 0.5,
        "burst": 2,
        "tokens_before": 0.0,
        "tokens_after": 0.0,
        "allowed": False,
        "enforced": True,
    }
    assert tiers["account"]["tokens_after"] == 4998.0  # the refused request took nothing
    other = await drive(gate, req("/authors"))  # another route has its own bucket
    assert other.response.status_code == 200
    clock.now += 2.0
    assert (await drive(gate, req())).response.status_code == 200


async def test_trace_cuts_tokens_to_the_thousandth_so_a_refused_bucket_never_shows_a_whole_token(
    make_gateway, backend, clock
):
    _, gate = make_gateway(
        {"api.yaml": API, "t.yaml": throttle(routes={"GET /books": {"rate": 1, "burst": 1}})}, upstream=backend.url
    )
    assert (await drive(gate, req())).response.status_code == 200
    clock.now += 0.9996  # 0.9996 tokens: not enough
    f = await drive(gate, req())
    assert f.response.status_code == 429
    tiers = {t["tier"]: t for t in decision(f)["detail"]["tiers"]}
    assert (tiers["route"]["tokens_before"], tiers["route"]["allowed"]) == (0.999, False)
    assert tiers["account"]["tokens_before"] == 5000.0  # burst 5000, refilled to full


async def test_a_flood_of_new_clients_never_resets_an_idle_route_bucket(make_gateway, backend, clock):
    """Only per-client buckets are evicted: a route's own bucket, idle while many clients pass
    elsewhere, keeps its count."""
    policy = throttle(
        max_buckets=100,
        routes={"GET /books": {"rate": 0.001, "burst": 1}, "GET /authors": {"rate": 1, "burst": 1, "key": ["ip"]}},
    )
    _, gate = make_gateway({"api.yaml": API, "t.yaml": policy}, upstream=backend.url)
    assert (await drive(gate, req())).response.status_code == 200  # /books' only token
    for i in range(150):
        f = await drive(gate, req("/authors", peer=f"192.0.2.{i}"))
        assert f.response.status_code == 200
    (throttle_plugin,) = [p for p in gate.policy.instances if getattr(p, "name", None) == "throttle"]
    assert len(throttle_plugin.store) == 100 + 2  # the bound of client buckets, the account and /books
    assert (await drive(gate, req())).response.status_code == 429


async def test_stage_and_account_tiers_apply_to_every_route(make_gateway, backend, clock):
    _, gate = make_gateway(
        {"api.yaml": API, "t.yaml": throttle(account={"rate": 100, "burst": 3}, stage={"rate": 50, "burst": 50})},
        upstream=backend.url,
    )
    codes = [(await drive(gate, req(p))).response.status_code for p in ("/books", "/authors", "/books", "/authors")]
    assert codes == [200, 200, 200, 429]
    last = decision(await drive(gate, req()))
    assert last["rule"] == "throttle/account"


async def test_per_client_keys_give_each_client_its_own_bucket(make_gateway, backend, clock):
    policy = throttle(
        trusted_proxies=["10.0.0.0/8"], routes={"GET /books": {"rate": 1, "burst": 1, "key": ["ip", "header:x-tenant"]}}
    )
    _, gate = make_gateway({"api.yaml": API, "t.yaml": policy}, upstream=backend.url)
    a1 = await drive(gate, req(peer="10.0.0.2", x_forwarded_for="1.1.1.1", x_tenant="a"))
    a2 = await drive(gate, req(peer="10.0.0.2", x_forwarded_for="1.1.1.1", x_tenant="a"))
    b = await drive(gate, req(peer="10.0.0.2", x_forwarded_for="2.2.2.2", x_tenant="a"))
    c = await drive(gate, req(peer="10.0.0.2", x_forwarded_for="1.1.1.1", x_tenant="c"))
    assert [x.response.status_code for x in (a1, a2, b, c)] == [200, 429, 200, 200]
    key = decision(a2)["detail"]["tiers"][-1]["key"]
    assert key.startswith("shop:prod:route:GET /books:") and "1.1.1.1" not in key and ":a" not in key


async def test_report_mode_tier_passes_and_records_would_be_429(make_gateway, backend, clock, tmp_path):
    policy = throttle(routes={"GET /books": {"rate": 1, "burst": 1, "mode": "report"}})
    _, gate = make_gateway({"api.yaml": API, "t.yaml": policy}, upstream=backend.url)
    first = await drive(gate, req())
    second = await drive(gate, req())
    assert first.response.status_code == second.response.status_code == 200
    assert second.metadata["sidegate"]["report_only"] == [
        {"plugin": "throttle", "reason": "rate_limited", "rule": "throttle/route"}
    ]
    assert first.metadata["sidegate"]["report_only"] == []
    metrics = gate.metrics.render().decode()
    assert 'sidegate_rejections_total{enforced="false",plugin="throttle",reason="rate_limited"} 1.0' in metrics


async def test_whole_document_in_report_mode(make_gateway, backend, clock):
    policy = throttle(mode="report", routes={"GET /books": {"rate": 1, "burst": 1}})
    _, gate = make_gateway({"api.yaml": API, "t.yaml": policy}, upstream=backend.url)
    await drive(gate, req())
    f = await drive(gate, req())
    assert f.response.status_code == 200 and f.metadata["sidegate"]["report_only"][0]["reason"] == "rate_limited"


async def test_ratelimit_headers_on_success_and_switched_off(make_gateway, backend, clock):
    on = throttle(rate_limit_headers_on_success=True, routes={"GET /books": {"rate": 1, "burst": 5}})
    _, gate = make_gateway({"api.yaml": API, "t.yaml": on}, upstream=backend.url)
    f = await drive(gate, req())
    assert f.response.status_code == 200 and f.response.headers["ratelimit"] == '"route";r=4;t=0'
    off = throttle(rate_limit_headers=False, routes={"GET /books": {"rate": 1, "burst": 1}})
    _, gate2 = make_gateway({"api.yaml": API, "t.yaml": off}, upstream=backend.url)
    await drive(gate2, req())
    g = await drive(gate2, req())
    assert g.response.status_code == 429 and g.response.headers["retry-after"] == "1"
    assert "ratelimit" not in g.response.headers and "ratelimit" not in f.request.headers


async def test_admitted_answers_skip_the_response_checkpoint_unless_they_get_headers(make_gateway, backend, clock):
    plain = throttle(routes={"GET /books": {"rate": 1, "burst": 5}})
    _, gate = make_gateway({"api.yaml": API, "t.yaml": plain}, upstream=backend.url)
    f = await drive(gate, req())
    steps = [(e["checkpoint"], e["plugin"]) for e in f.metadata["sidegate"]["trace"]]
    assert ("method_request", "throttle") in steps and ("method_response", "throttle") not in steps
    assert "ratelimit" not in f.response.headers
    on = throttle(rate_limit_headers_on_success=True, routes={"GET /books": {"rate": 1, "burst": 5}})
    _, gate2 = make_gateway({"api.yaml": API, "t.yaml": on}, upstream=backend.url)
    g = await drive(gate2, req())
    assert ("method_response", "throttle") in [(e["checkpoint"], e["plugin"]) for e in g.metadata["sidegate"]["trace"]]


def test_policy_errors(tmp_path):
    from conftest import write_policies

    from addons.policy.errors import PolicyError
    from addons.policy.policyset import load_policy_set

    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": "kind: Api\nroutes:\n  GET /a: {}\n",
            "t.yaml": "kind: Throttle\naccount: {rate: 0, burst: 5}\nroutes:\n  GET /b: {rate: 1, burst: 1}\n"
            "  GET /a: {rate: 1, burst: 1, key: [cookie]}\ntrusted_proxies: [not-a-net]\n",
        },
    )
    with pytest.raises(PolicyError) as e:
        load_policy_set(tmp_path / "policies")
    lines = str(e.value).splitlines()
    assert lines == [
        "policies/t.yaml:2:17: account.rate: must be greater than 0 (got 0)",
        "policies/t.yaml:5:37: routes['GET /a'].key[0]: expected ip, client_cert_subject or header:<name> (got 'cookie')",
        "policies/t.yaml:6:19: trusted_proxies[0]: invalid IP network 'not-a-net'",
    ]


async def test_per_client_certificate_subject_buckets(make_gateway, backend, clock):
    from mitmproxy import certs

    from addons import pki

    root = pki.create_root_ca()
    alice = certs.Cert(pki.create_client_cert(root, pki.x509_name("alice")).cert)
    bob = certs.Cert(pki.create_client_cert(root, pki.x509_name("bob")).cert)
    policy = throttle(routes={"GET /books": {"rate": 1, "burst": 1, "key": ["client_cert_subject"]}})
    _, gate = make_gateway({"api.yaml": API, "t.yaml": policy}, upstream=backend.url)

    def as_client(cert):
        f = req()
        f.client_conn.certificate_list = [cert]
        return f

    codes = [(await drive(gate, as_client(c))).response.status_code for c in (alice, alice, bob)]
    assert codes == [200, 429, 200]


def test_a_large_bound_is_sharded_and_still_holds_exactly():
    from addons.throttle.buckets import SHARD_FROM, SHARDS

    store = MemoryStore(max_buckets=SHARD_FROM + 5)
    assert len(store._shards) == SHARDS and sum(store._limits) == SHARD_FROM + 5
    for i in range(SHARD_FROM * 2):
        store.acquire([spec(f"client-{i}")], 0.0)
    assert len(store) == SHARD_FROM + 5  # every shard full, none beyond its share
    recent = [f"client-{i}" for i in range(SHARD_FROM * 2 - 100, SHARD_FROM * 2)]
    assert all(store.peek(k) is not None for k in recent)  # the most recent survive in every shard
    assert store.peek("client-0") is None  # the oldest went
    assert store.acquire([spec("client-0", burst=3)], 0.0).results[0].tokens_before == 3.0  # back full
    assert len(MemoryStore(max_buckets=100)._shards) == 1  # small bounds: one exact LRU
