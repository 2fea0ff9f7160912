"""CORS: origin matching, preflights at the gateway, headers on every answer, Vary, report mode."""

from __future__ import annotations

import pytest
from conftest import drive, write_policies
from mitmproxy.test import tflow, tutils

from addons.cors import compile_settings
from addons.policy.errors import PolicyError
from addons.policy.models import CorsPolicy
from addons.policy.policyset import load_policy_set

API = """
    kind: Api
    routes:
      GET /books: {}
      PUT /books/{id}: {}
      DELETE /books/{id}: {}
      GET /private: {}
"""
CORS = """
    kind: Cors
    allow_origins:
      - https://app.example.com
      - https://*.preview.example.com
      - http://localhost:3000
      - regex: 'https://[a-z0-9-]+\\.review\\.example\\.com'
    allow_methods: [GET, PUT]
    allow_headers: [content-type, x-api-key]
    expose_headers: [x-request-id]
    allow_credentials: true
    max_age: 10m
    routes:
      GET /private:
        allow_origins: [https://admin.example.com]
"""


def policy(**fields):
    return CorsPolicy(kind="Cors", **fields)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://APP.example.com:443", True),  # normalised: case, default port
        ("https://app.example.com:8443", False),
        ("http://app.example.com", False),  # scheme matters
        ("https://a.preview.example.com", True),
        ("https://a.b.preview.example.com", True),  # one or more labels
        ("https://preview.example.com", False),  # the bare domain is not a subdomain
        ("https://a.preview.example.com.evil.io", False),
        ("https://evilpreview.example.com", False),
        ("http://localhost:3000", True),
        ("http://localhost", False),
        ("https://pr-12.review.example.com", True),
        ("https://pr-12.review.example.com.evil.io", False),  # regexes are anchored to the whole origin
        ("https://x.pr-12.review.example.com", False),
        ("null", False),  # never, unless listed
        ("not an origin", False),
        ("https://app.example.com/path", False),
    ],
)
def test_origin_matching(origin, allowed):
    s = compile_settings(
        policy(
            allow_origins=[
                "https://app.example.com",
                "https://*.preview.example.com",
                "http://localhost:3000",
                {"regex": r"https://[a-z0-9-]+\.review\.example\.com"},
            ],
        )
    )
    assert s.origin_allowed(origin) is allowed


def test_null_only_when_listed():
    assert compile_settings(policy(allow_origins=["null"])).origin_allowed("null")
    assert not compile_settings(policy(allow_origins=["*"])).origin_allowed("null")


def test_credentials_with_any_origin_is_a_load_error(tmp_path):
    write_policies(tmp_path / "policies", {"cors.yaml": "kind: Cors\nallow_origins: ['*']\nallow_credentials: true\n"})
    with pytest.raises(
        PolicyError, match=r"cors\.yaml:1:1: allow_credentials: true cannot be combined with allow_origins '\*'"
    ):
        load_policy_set(tmp_path / "policies")


def test_bad_origin_and_regex_and_unknown_route_are_load_errors(tmp_path):
    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": "kind: Api\nroutes:\n  GET /a: {}\n",
            "cors.yaml": "kind: Cors\nallow_origins:\n  - https://app.example.com/path\n  - regex: '(unclosed'\n"
            "routes:\n  GET /b: {max_age: 5s}\n",
        },
    )
    with pytest.raises(PolicyError) as e:
        load_policy_set(tmp_path / "policies")
    lines = str(e.value).splitlines()
    assert lines[0].startswith("policies/cors.yaml:3:5: allow_origins[0]: expected an origin such as")
    assert lines[1].startswith(
        "policies/cors.yaml:4:12: allow_origins[1].regex: invalid regular expression (missing ): (unclosed)"
    )


def test_cors_route_override_must_name_a_declared_route(tmp_path):
    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": "kind: Api\nroutes:\n  GET /a: {}\n",
            "cors.yaml": "kind: Cors\nallow_origins: [https://a.example]\nroutes:\n  GET /b: {max_age: 5s}\n",
        },
    )
    with pytest.raises(PolicyError, match=r"policies/cors.yaml:4:3: routes: route 'GET /b' is not declared in the Api"):
        load_policy_set(tmp_path / "policies")


def req(method="GET", path="/books", **headers):
    hdrs = [(b"host", b"api.example")] + [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return tflow.tflow(req=tutils.treq(method=method.encode(), path=path.encode(), headers=hdrs))


async def test_allowed_preflight_is_answered_204_and_not_forwarded(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": CORS}, upstream=backend.url)
    f = await drive(
        gate,
        req(
            "OPTIONS",
            "/books/7",
            origin="https://app.example.com",
            access_control_request_method="PUT",
            access_control_request_headers="Content-Type, X-Api-Key",
        ),
    )
    assert f.response.status_code == 204
    h = f.response.headers
    assert h["access-control-allow-origin"] == "https://app.example.com"
    assert h["access-control-allow-methods"] == "GET, PUT"
    assert h["access-control-allow-headers"] == "content-type, x-api-key"
    assert h["access-control-allow-credentials"] == "true"
    assert h["access-control-max-age"] == "600"
    assert h["vary"] == "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    assert backend.seen == []
    assert f.metadata["sidegate"]["outcome"] == "answered"
    assert f.metadata["sidegate"]["trace"][0]["outcome"] == "answer"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"origin": "https://evil.example"}, "cors_origin_denied"),
        ({"origin": "https://app.example.com", "access_control_request_method": "DELETE"}, "cors_method_denied"),
        ({"origin": "https://app.example.com", "access_control_request_headers": "x-other"}, "cors_header_denied"),
        (
            {"origin": "https://app.example.com", "access_control_request_private_network": "true"},
            "cors_private_network_denied",
        ),
    ],
)
async def test_refused_preflight_has_no_allow_headers_and_says_why(make_gateway, backend, headers, reason):
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": CORS}, upstream=backend.url)
    headers.setdefault("access_control_request_method", "PUT")
    f = await drive(gate, req("OPTIONS", "/books/7", **headers))
    assert f.response.status_code == 403
    assert not [k for k in f.response.headers if k.lower().startswith("access-control-allow")]
    assert "Origin" in f.response.headers["vary"]
    assert f.metadata["sidegate"]["trace"][0]["reason"] == reason
    assert backend.seen == []


async def test_simple_methods_need_no_listing_and_max_age_only_when_set(make_gateway, backend):
    _, gate = make_gateway(
        {"api.yaml": API, "cors.yaml": "kind: Cors\nallow_origins: [https://a.example]\nallow_methods: [PUT]\n"},
        upstream=backend.url,
    )
    f = await drive(gate, req("OPTIONS", "/books", origin="https://a.example", access_control_request_method="GET"))
    assert f.response.status_code == 204
    assert "access-control-max-age" not in f.response.headers
    assert "access-control-allow-credentials" not in f.response.headers


@pytest.mark.parametrize(
    ("credentials", "header", "ok"),
    [
        (False, "x-anything", True),
        (False, "authorization", False),
        (True, "x-anything", False),
    ],
)
async def test_wildcard_headers_follow_fetch(make_gateway, backend, credentials, header, ok):
    cors = f"kind: Cors\nallow_origins: [https://a.example]\nallow_headers: ['*']\nallow_credentials: {str(credentials).lower()}\n"
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": cors}, upstream=backend.url)
    f = await drive(
        gate,
        req(
            "OPTIONS",
            "/books",
            origin="https://a.example",
            access_control_request_method="GET",
            access_control_request_headers=header,
        ),
    )
    assert (f.response.status_code == 204) is ok


async def test_private_network_preflight_when_opted_in(make_gateway, backend):
    cors = "kind: Cors\nallow_origins: [https://a.example]\nallow_private_network: true\n"
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": cors}, upstream=backend.url)
    f = await drive(
        gate,
        req(
            "OPTIONS",
            "/books",
            origin="https://a.example",
            access_control_request_method="GET",
            access_control_request_private_network="true",
        ),
    )
    assert f.response.status_code == 204 and f.response.headers["access-control-allow-private-network"] == "true"
    g = await drive(gate, req("OPTIONS", "/books", origin="https://a.example", access_control_request_method="GET"))
    assert "access-control-allow-private-network" not in g.response.headers


async def answer(gate, origin, backend_headers):
    """A request from ``origin`` through the method request, then the backend's answer with these
    headers through integration and method response (the CORS decoration under test)."""
    f = req(origin=origin)
    await gate.addons[0].requestheaders(f)
    await gate.addons[0].request(f)
    f.response = tutils.tresp(headers=backend_headers)
    await gate.addons[2].response(f)
    await gate.addons[3].response(f)
    return f.response.headers


async def test_actual_response_headers_replace_the_backends_and_merge_vary(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": CORS}, upstream=backend.url)
    backend_cors = (
        (b"vary", b"Accept"),
        (b"access-control-allow-origin", b"*"),
        (b"access-control-allow-credentials", b"false"),
    )
    h = await answer(gate, "https://a.preview.example.com", backend_cors)
    assert h.get_all("access-control-allow-origin") == ["https://a.preview.example.com"]
    assert h.get_all("access-control-allow-credentials") == ["true"]
    assert h["access-control-expose-headers"] == "x-request-id"
    assert h["vary"] == "Accept, Origin"
    assert "access-control-allow-methods" not in h  # preflight-only headers stay off actual answers


async def test_gateway_errors_carry_cors_headers(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": CORS}, upstream=backend.url)
    f = await drive(gate, req("GET", "/nope", origin="https://app.example.com"))
    assert f.response.status_code == 403
    assert f.response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert f.response.headers["vary"] == "Origin"


async def test_disallowed_origin_gets_vary_but_no_allow_headers_and_a_flag(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": CORS}, upstream=backend.url)
    f = await drive(gate, req(origin="https://evil.example"))
    assert f.response.status_code == 200  # CORS is enforced by the browser; the answer is withheld, not refused
    assert "access-control-allow-origin" not in f.response.headers
    assert f.response.headers["vary"] == "Origin"
    flags = f.metadata["sidegate"]["flags"]
    assert flags == [{"plugin": "cors", "reason": "cors_origin_denied", "rule": None}]
    g = await drive(gate, req())  # no Origin: not a CORS request, still varies
    assert g.response.headers["vary"] == "Origin" and "access-control-allow-origin" not in g.response.headers


async def test_route_override_narrows_origins(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": CORS}, upstream=backend.url)
    f = await drive(gate, req("GET", "/private", origin="https://app.example.com"))
    assert "access-control-allow-origin" not in f.response.headers
    g = await drive(gate, req("GET", "/private", origin="https://admin.example.com"))
    assert g.response.headers["access-control-allow-origin"] == "https://admin.example.com"


async def test_any_origin_without_credentials_is_star_and_needs_no_vary(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": "kind: Cors\nallow_origins: ['*']\n"}, upstream=backend.url)
    f = await drive(gate, req(origin="https://anyone.example"))
    assert f.response.headers["access-control-allow-origin"] == "*"
    assert "vary" not in f.response.headers


async def test_report_mode_emits_headers_as_if_allowed_and_records(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": CORS + "    mode: report\n"}, upstream=backend.url)
    pre = await drive(
        gate, req("OPTIONS", "/books", origin="https://evil.example", access_control_request_method="GET")
    )
    assert pre.response.status_code == 204
    assert pre.response.headers["access-control-allow-origin"] == "https://evil.example"
    assert pre.metadata["sidegate"]["report_only"][0]["reason"] == "cors_origin_denied"
    actual = await drive(gate, req(origin="https://evil.example"))
    assert actual.response.headers["access-control-allow-origin"] == "https://evil.example"
    assert actual.metadata["sidegate"]["report_only"] == [
        {"plugin": "cors", "reason": "cors_origin_denied", "rule": None}
    ]
    metrics = gate.metrics.render().decode()
    assert 'sidegate_rejections_total{enforced="false",plugin="cors",reason="cors_origin_denied"} 2.0' in metrics


async def test_plain_options_request_is_routed_normally(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API + "      OPTIONS /books: {}\n", "cors.yaml": CORS}, upstream=backend.url)
    f = await drive(gate, req("OPTIONS", "/books"))
    assert f.response.status_code == 200 and backend.seen[-1]["method"] == "OPTIONS"


async def test_remembered_verdicts_stay_per_route_and_origin_and_bounded(make_gateway, backend, monkeypatch):
    import addons.cors

    monkeypatch.setattr(addons.cors, "VERDICT_CACHE_SIZE", 4)
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": CORS}, upstream=backend.url)
    for _ in range(2):  # the second round is answered from what the first remembered
        ok = await drive(gate, req("GET", "/books", origin="https://app.example.com"))
        assert ok.response.headers["access-control-allow-origin"] == "https://app.example.com"
        private = await drive(gate, req("GET", "/private", origin="https://app.example.com"))
        assert "access-control-allow-origin" not in private.response.headers  # same origin, other route
        assert private.metadata["sidegate"]["flags"][0]["reason"] == "cors_origin_denied"
        other = await drive(gate, req("GET", "/books", origin="https://b.preview.example.com"))
        assert other.response.headers["access-control-allow-origin"] == "https://b.preview.example.com"
    cors = next(s.method.__self__ for s in gate.policy.plugins["method_response"] if s.name == "cors")
    for i in range(10):
        await drive(gate, req("GET", "/books", origin=f"https://x{i}.preview.example.com"))
        assert len(cors._verdicts) <= 4


async def test_vary_fields_are_kept_when_nothing_is_added_and_merged_once_otherwise(make_gateway, backend):
    two = ((b"vary", b"Accept"), (b"x-a", b"1"), (b"vary", b"Accept-Encoding"))
    _, star = make_gateway({"api.yaml": API, "cors.yaml": "kind: Cors\nallow_origins: ['*']\n"}, upstream=backend.url)
    h = await answer(star, "https://anyone.example", two)
    assert h.get_all("vary") == ["Accept", "Accept-Encoding"]  # origin-independent: untouched
    _, gate = make_gateway({"api.yaml": API, "cors.yaml": CORS}, upstream=backend.url)
    h = await answer(gate, "https://app.example.com", two)
    assert h.get_all("vary") == ["Accept, Accept-Encoding, Origin"]
    assert [k for k, _ in h.fields][:2] == [b"vary", b"x-a"]  # where the first one was
    h = await answer(gate, "https://app.example.com", ((b"vary", b"*"), (b"vary", b"Accept")))
    assert h.get_all("vary") == ["*", "Accept"]  # Vary: * already says everything
