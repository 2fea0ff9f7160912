"""API keys, usage plans and quotas (fake clocks; a real SQLite file for quota counters)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from conftest import drive, write_policies
from mitmproxy.test import tflow, tutils

from addons.policy.errors import PolicyError
from addons.policy.policyset import load_policy_set
from addons.throttle.plans import QuotaStore, period_end, period_start

GOLD = "goldKEYPLANTED0123456789"
SILVER = "silverKEYPLANTED98765432"
HASHED = "hashedKEYPLANTED55555555"
OFF = "disabledKEYPLANTED000000"

API = """
    kind: Api
    name: shop
    stage: prod
    routes:
      GET /books: {api_key_required: true}
      GET /orders: {api_key_required: true}
      GET /public: {}
"""


def plans(quota_limit=3, extra=""):
    return f"""
        kind: UsagePlans
        quota_file: state/quotas.sqlite
        plans:
          gold:
            stages: [prod]
            throttle: {{rate: 100, burst: 100}}
            routes:
              GET /orders: {{rate: 1, burst: 2}}
            quota: {{limit: {quota_limit}, period: DAY}}
          elsewhere:
            stages: [staging]
        keys:
          partner-a: {{value: {{secret_env: GOLD_KEY}}, plan: gold}}
          partner-b: {{value: {{sha256: {hashlib.sha256(HASHED.encode()).hexdigest()}}}, plan: gold}}
          partner-c: {{value: {{secret_env: SILVER_KEY}}, plan: elsewhere}}
          partner-d: {{value: {{secret_env: OFF_KEY}}, plan: gold, enabled: false}}
        {extra}
    """


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("GOLD_KEY", GOLD)
    monkeypatch.setenv("SILVER_KEY", SILVER)
    monkeypatch.setenv("OFF_KEY", OFF)


def req(path="/books", key=None):
    headers = [(b"host", b"x")] + ([(b"x-api-key", key.encode())] if key else [])
    return tflow.tflow(req=tutils.treq(path=path.encode(), headers=headers))


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (None, "api_key_missing"),
        ("nope" * 6, "api_key_unknown"),
        (OFF, "api_key_disabled"),
        (SILVER, "api_key_not_in_plan"),
    ],
)
async def test_bad_keys_are_403_invalid_api_key(make_gateway, backend, key, reason):
    _, gate = make_gateway({"api.yaml": API, "plans.yaml": plans()}, upstream=backend.url)
    f = await drive(gate, req(key=key))
    assert f.response.status_code == 403
    assert json.loads(f.response.content) == {"message": "Forbidden"}
    assert f.response.headers["x-amzn-ErrorType"] == "ForbiddenException"
    assert f.metadata["sidegate"]["reason"] == reason
    assert backend.seen == []


async def test_valid_keys_pass_and_are_never_recorded(make_gateway, backend, tmp_path):
    _, gate = make_gateway({"api.yaml": API, "plans.yaml": plans()}, upstream=backend.url)
    a = await drive(gate, req(key=GOLD))
    b = await drive(gate, req(key=HASHED))
    public = await drive(gate, req("/public"))  # keys are only checked where required
    assert [x.response.status_code for x in (a, b, public)] == [200, 200, 200]
    detail = next(e for e in a.metadata["sidegate"]["trace"] if e["plugin"] == "api_keys")["detail"]
    assert detail["key_id"] == "partner-a" and detail["plan"] == "gold"
    recorded = (
        json.dumps([a.metadata, b.metadata]) + (tmp_path / "access.log").read_text() + gate.metrics.render().decode()
    )
    assert GOLD not in recorded and HASHED not in recorded
    assert "x-api-key" in {k.lower() for k in backend.seen[0]["headers"]}  # the backend still sees its key


async def test_plan_route_throttle_is_per_key(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API, "plans.yaml": plans(quota_limit=100)}, upstream=backend.url)
    codes = [(await drive(gate, req("/orders", GOLD))).response.status_code for _ in range(3)]
    other = await drive(gate, req("/orders", HASHED))
    assert codes == [200, 200, 429] and other.response.status_code == 200
    refused = await drive(gate, req("/orders", GOLD))
    entry = next(
        e
        for e in refused.metadata["sidegate"]["trace"]
        if e["plugin"] == "throttle" and e["checkpoint"] == "method_request"
    )
    assert entry["rule"] == "throttle/plan_route"
    tier = entry["detail"]["tiers"][-1]
    assert tier["key"] == "shop:prod:plan:gold:key:partner-a:route:GET /orders"


async def test_quota_exhausted_is_429_limit_exceeded_and_refused_requests_spend_none(make_gateway, backend, tmp_path):
    _, gate = make_gateway({"api.yaml": API, "plans.yaml": plans(quota_limit=3)}, upstream=backend.url)
    codes = [(await drive(gate, req("/orders", GOLD))).response.status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # the third is refused by the route throttle and spends no quota
    codes += [(await drive(gate, req("/books", GOLD))).response.status_code for _ in range(2)]
    assert codes[3:] == [200, 429]
    f = await drive(gate, req("/books", GOLD))
    assert f.response.status_code == 429
    assert json.loads(f.response.content) == {"message": "Limit Exceeded"}
    assert f.response.headers["x-amzn-ErrorType"] == "LimitExceededException"
    assert f.metadata["sidegate"]["reason"] == "quota_exceeded"
    # the quota is per key
    assert (await drive(gate, req("/books", HASHED))).response.status_code == 200
    # and survives a restart: a fresh store on the same file sees the count
    store = QuotaStore(tmp_path / "state" / "quotas.sqlite")
    start = period_start("DAY", dt.datetime.now(dt.UTC)).isoformat()
    assert store.used("partner-a", start) == 3
    store.close()


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("DAY", "2026-11-24T23:59:59+00:00", "2026-11-24T00:00:00+00:00", "2026-11-25T00:00:00+00:00"),
        (
            "DAY",
            "2026-11-25T01:30:00+02:00",
            "2026-11-24T00:00:00+00:00",
            "2026-11-25T00:00:00+00:00",
        ),  # UTC, not local
        ("WEEK", "2026-11-29T12:00:00+00:00", "2026-11-23T00:00:00+00:00", "2026-11-30T00:00:00+00:00"),  # Monday
        ("MONTH", "2026-12-31T23:00:00+00:00", "2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        ("MONTH", "2028-02-29T10:00:00+00:00", "2028-02-01T00:00:00+00:00", "2028-03-01T00:00:00+00:00"),
    ],
)
def test_quota_periods_are_utc_calendar_periods(period, now, start, end):
    s = period_start(period, dt.datetime.fromisoformat(now))
    assert s.isoformat() == start and period_end(period, s).isoformat() == end


async def test_quota_offset_applies_in_the_first_period_only(make_gateway, backend, tmp_path, monkeypatch):
    clock = {"t": dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp()}
    monkeypatch.setattr("addons.throttle.plans.time", type("T", (), {"time": staticmethod(lambda: clock["t"])}))
    files = {"api.yaml": API, "plans.yaml": plans(quota_limit=3).replace("period: DAY}", "period: DAY, offset: 2}")}
    _, gate = make_gateway(files, upstream=backend.url)
    codes = [(await drive(gate, req("/books", GOLD))).response.status_code for _ in range(2)]
    assert codes == [200, 429]  # 3 - 2 in the first day
    clock["t"] += 86400  # the next UTC day: the full limit
    codes = [(await drive(gate, req("/books", GOLD))).response.status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_policy_errors_never_show_key_values(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORT_KEY", "tooSHORTplanted")
    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": "kind: Api\nroutes:\n  GET /a: {api_key_required: true}\n",
            "plans.yaml": "kind: UsagePlans\nplans:\n  gold: {}\nkeys:\n  k1: {value: {secret_env: SHORT_KEY}, plan: gold}\n"
            "  k2: {value: {sha256: xyz}, plan: gold}\n  k3: {value: {sha256: " + "a" * 64 + "}, plan: silver}\n",
        },
    )
    with pytest.raises(PolicyError) as e:
        load_policy_set(tmp_path / "policies")
    text = str(e.value)
    assert "tooSHORTplanted" not in text
    assert (
        "policies/plans.yaml:5:8: keys.k1.value: API key from env:SHORT_KEY must be 20 to 128 letters and digits"
        in text
    )
    assert "policies/plans.yaml:6:24: keys.k2.value.sha256: expected 64 hexadecimal characters" in text
    assert "unknown key" not in text  # the secret-reference branch of the union is not reported


def test_key_naming_an_unknown_plan_and_required_keys_without_plans(tmp_path):
    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": "kind: Api\nroutes:\n  GET /a: {api_key_required: true}\n",
            "plans.yaml": "kind: UsagePlans\nplans:\n  gold: {}\nkeys:\n  k3: {value: {sha256: "
            + "a" * 64
            + "}, plan: silver}\n",
        },
    )
    with pytest.raises(PolicyError, match=r"plans.yaml:1:1: key 'k3' names plan 'silver', which is not declared"):
        load_policy_set(tmp_path / "policies")
    (tmp_path / "policies" / "plans.yaml").unlink()
    with pytest.raises(PolicyError, match=r"api.yaml:2:1: routes: routes require an API key, but no UsagePlans"):
        load_policy_set(tmp_path / "policies")


async def test_saved_flow_shows_the_key_id_not_the_key(make_gateway, backend, tmp_path):
    from mitmproxy import io

    _, gate = make_gateway({"api.yaml": API, "plans.yaml": plans()}, upstream=backend.url)
    ok = await drive(gate, req(key=GOLD))
    bad = await drive(gate, req(key="unknownKEYPLANTED0000000"))
    assert backend.seen[0]["headers"]["x-api-key"] == GOLD  # the backend still receives it
    assert ok.request.headers["x-api-key"] == "[redacted: key partner-a]"
    assert bad.request.headers["x-api-key"] == "[redacted: unknown key]"
    path = tmp_path / "flows"
    with open(path, "wb") as fh:
        writer = io.FlowWriter(fh)
        writer.add(ok)
        writer.add(bad)
    assert GOLD.encode() not in path.read_bytes() and b"unknownKEYPLANTED" not in path.read_bytes()
