"""Origin secret header: constant-time check against current and previous secrets, stripped always."""

from __future__ import annotations

import json

import pytest
from conftest import access_lines, drive
from mitmproxy.test import tflow, tutils

CURRENT, PREVIOUS = "cur-PLANTED-4f1e", "prev-PLANTED-92ab"
API = """
    kind: Api
    routes:
      GET /health: {}
      GET /books: {}
"""
ORIGIN = """
    kind: OriginVerify
    header: x-origin-verify
    secrets:
      - {secret_env: ORIGIN_SECRET}
      - {secret_env: ORIGIN_SECRET_PREVIOUS}
    exempt_routes: [GET /health]
"""
DENY = "kind: Plugin\nuse: sample_plugins:DenyHeader\nconfig: {header: x-deny}\n"


@pytest.fixture(autouse=True)
def secrets(monkeypatch):
    monkeypatch.setenv("ORIGIN_SECRET", CURRENT)
    monkeypatch.setenv("ORIGIN_SECRET_PREVIOUS", PREVIOUS)


def req(path="/books", method="GET", *headers):
    return tflow.tflow(
        req=tutils.treq(method=method.encode(), path=path.encode(), headers=((b"host", b"api.example"), *headers))
    )


@pytest.mark.parametrize("secret", [CURRENT, PREVIOUS])
async def test_current_and_previous_secret_pass_and_never_reach_the_backend(make_gateway, backend, secret, tmp_path):
    _, gate = make_gateway({"api.yaml": API, "origin.yaml": ORIGIN}, upstream=backend.url)
    f = await drive(gate, req("/books", "GET", (b"x-origin-verify", secret.encode())))
    assert f.response.status_code == 200
    assert "x-origin-verify" not in {k.lower() for k in backend.seen[-1]["headers"]}
    assert "x-origin-verify" not in f.request.headers
    assert secret not in json.dumps(f.metadata) + f.comment + (tmp_path / "access.log").read_text()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ((), "origin_secret_missing"),
        (((b"x-origin-verify", b"wrong"),), "origin_secret_mismatch"),
        (((b"x-origin-verify", CURRENT.encode() + b"x"),), "origin_secret_mismatch"),
        (((b"x-origin-verify", CURRENT.encode()), (b"x-origin-verify", b"other")), "origin_secret_mismatch"),
    ],
)
async def test_missing_or_wrong_secret_is_403_before_other_plugins(make_gateway, backend, headers, reason):
    _, gate = make_gateway({"api.yaml": API, "origin.yaml": ORIGIN, "deny.yaml": DENY}, upstream=backend.url)
    f = await drive(gate, req("/nope", "GET", (b"x-deny", b"1"), *headers))
    assert f.response.status_code == 403
    assert json.loads(f.response.content) == {"message": "Forbidden"}
    trace = f.metadata["sidegate"]["trace"]
    assert [(e["plugin"], e["reason"]) for e in trace] == [("origin_verify", reason)]  # nothing else ran
    assert backend.seen == []
    assert "x-origin-verify" not in f.request.headers


async def test_exempt_route_passes_without_secret_and_header_is_still_stripped(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API, "origin.yaml": ORIGIN}, upstream=backend.url)
    f = await drive(gate, req("/health", "GET", (b"x-origin-verify", b"garbage")))
    assert f.response.status_code == 200
    assert "x-origin-verify" not in {k.lower() for k in backend.seen[-1]["headers"]}


async def test_preflights_pass_only_when_the_policy_says_so(make_gateway, backend):
    cors = "kind: Cors\nallow_origins: [https://app.example]\n"
    preflight = ((b"origin", b"https://app.example"), (b"access-control-request-method", b"GET"))
    _, gate = make_gateway({"api.yaml": API, "origin.yaml": ORIGIN, "cors.yaml": cors}, upstream=backend.url)
    f = await drive(gate, req("/books", "OPTIONS", *preflight))
    assert f.response.status_code == 403
    _, gate2 = make_gateway(
        {"api.yaml": API, "origin.yaml": ORIGIN + "    allow_preflight: true\n", "cors.yaml": cors},
        upstream=backend.url,
    )
    g = await drive(gate2, req("/books", "OPTIONS", *preflight))
    assert g.response.status_code == 204
    h = await drive(gate2, req("/books", "GET", (b"origin", b"https://app.example")))
    assert h.response.status_code == 403  # only preflights are exempt
    assert h.response.headers["access-control-allow-origin"] == "https://app.example"  # readable by the page


async def test_report_mode_passes_and_records(make_gateway, backend, tmp_path):
    _, gate = make_gateway({"api.yaml": API, "origin.yaml": ORIGIN + "    mode: report\n"}, upstream=backend.url)
    f = await drive(gate, req("/books", "GET", (b"x-origin-verify", b"wrong")))
    assert f.response.status_code == 200
    assert f.metadata["sidegate"]["report_only"] == [
        {"plugin": "origin_verify", "reason": "origin_secret_mismatch", "rule": None}
    ]
    assert "x-origin-verify" not in {k.lower() for k in backend.seen[-1]["headers"]}  # stripped in report mode too
    assert access_lines(tmp_path)[-1]["report_only"][0]["reason"] == "origin_secret_mismatch"


def test_secrets_must_be_references(tmp_path):
    from conftest import write_policies

    from addons.policy.errors import PolicyError
    from addons.policy.policyset import load_policy_set

    write_policies(tmp_path / "policies", {"o.yaml": "kind: OriginVerify\nsecrets: [plain-text-secret]\n"})
    with pytest.raises(PolicyError, match=r"o\.yaml:2:\d+: secrets\[0\]: secrets are references"):
        load_policy_set(tmp_path / "policies")
    write_policies(tmp_path / "policies", {"o.yaml": "kind: OriginVerify\nsecrets: []\n"})
    with pytest.raises(PolicyError, match=r"o\.yaml:2:1: secrets: must have at least 1 item\(s\)"):
        load_policy_set(tmp_path / "policies")
