"""HTTP integration: target URLs, headers, timeouts and failures, against a real backend."""

from __future__ import annotations

import json

from conftest import access_lines, drive, free_port
from mitmproxy.test import tflow, tutils

PLANTED = "backend-token-PLANTED-5521"


def flow(path, method="GET", headers=(), content=b""):
    f = tflow.tflow(
        req=tutils.treq(
            method=method.encode(), path=path.encode(), headers=((b"host", b"api.example"), *headers), content=content
        )
    )
    f.client_conn.timestamp_tls_setup = None  # a plain-HTTP client, as in the default sidecar
    return f


async def test_route_uri_with_path_parameters_stage_variables_and_query(make_gateway, backend):
    _, gate = make_gateway(
        {
            "api.yaml": f"""
        kind: Api
        stage_variables: {{version: v2}}
        routes:
          GET /books/{{id}}:
            integration: {{uri: "{backend.url}/${{stageVariables.version}}/items/{{id}}"}}
          ANY /files/{{proxy+}}:
            integration: {{uri: "{backend.url}/store/{{proxy}}", method: POST}}
    """
        }
    )
    f = await drive(gate, flow("/books/a%2Fb?full=1&x=%20"))
    assert f.response.status_code == 200
    assert backend.seen[-1]["path"] == "/v2/items/a%2Fb?full=1&x=%20"
    g = await drive(gate, flow("/files/dir/sub/file.txt", method="GET"))
    assert g.response.status_code == 200
    assert (backend.seen[-1]["method"], backend.seen[-1]["path"]) == ("POST", "/store/dir/sub/file.txt")


async def test_default_upstream_is_the_reverse_target(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": "kind: Api\n"}, upstream=backend.url)
    f = await drive(gate, flow("/anything/at/all?q=1", method="DELETE"))
    assert f.response.status_code == 200
    assert (backend.seen[-1]["method"], backend.seen[-1]["path"]) == ("DELETE", "/anything/at/all?q=1")


async def test_api_upstream_overrides_reverse_target(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": f"kind: Api\nupstream: {backend.url}/base\n"})
    f = await drive(gate, flow("/x"))
    assert f.response.status_code == 200 and backend.seen[-1]["path"] == "/base/x"


async def test_headers_forwarded_hop_by_hop_dropped_secret_added(make_gateway, backend, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKEND_TOKEN", PLANTED)
    _, gate = make_gateway(
        {
            "api.yaml": """
        kind: Api
        routes:
          POST /orders:
            integration:
              request_headers:
                authorization: {secret_env: BACKEND_TOKEN}
                x-static: fixed
    """
        },
        upstream=backend.url,
    )
    f = await drive(
        gate,
        flow(
            "/orders",
            method="POST",
            content=b'{"n": 1}',
            headers=(
                (b"content-type", b"application/json"),
                (b"connection", b"x-secret-hop"),
                (b"te", b"trailers"),
                (b"x-forwarded-for", b"203.0.113.9"),
                (b"x-custom", b"kept"),
            ),
        ),
    )
    assert f.response.status_code == 200
    seen = backend.seen[-1]
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["body"] == b'{"n": 1}'
    assert headers["authorization"] == PLANTED and headers["x-static"] == "fixed"
    assert headers["x-custom"] == "kept" and headers["content-type"] == "application/json"
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"  # appended, never replaced
    assert headers["x-forwarded-proto"] == "http"
    assert "te" not in headers and headers.get("connection", "") != "x-secret-hop"
    assert headers["host"] == backend.url.removeprefix("http://")
    # the response passes back with the backend's headers, minus hop-by-hop
    assert f.response.headers["x-backend"] == "yes"
    assert "connection" not in f.response.headers
    # the secret is nowhere in what sidegate records
    assert PLANTED not in json.dumps(f.metadata) + (f.comment or "")
    assert PLANTED not in (tmp_path / "access.log").read_text()


async def test_backend_status_passes_through(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": "kind: Api\n"}, upstream=backend.url)
    f = await drive(gate, flow("/status/418"))
    assert f.response.status_code == 418 and f.response.content == b"status"
    assert f.metadata["sidegate"]["outcome"] == "allowed"


async def test_timeout_answers_504_endpoint_request_timed_out(make_gateway, backend, tmp_path):
    _, gate = make_gateway(
        {
            "api.yaml": """
        kind: Api
        timeout: 5s
        routes:
          GET /sleep: {integration: {timeout: 200ms}}
    """
        },
        upstream=backend.url,
    )
    f = await drive(gate, flow("/sleep?s=3"))
    assert f.response.status_code == 504
    assert json.loads(f.response.content) == {"message": "Endpoint request timed out"}
    assert f.response.headers["x-amzn-ErrorType"] == "InternalServerErrorException"
    assert f.metadata["sidegate"]["trace"][-1]["reason"] == "integration_timeout"
    assert 150_000 <= f.metadata["sidegate"]["trace"][-1]["us"] < 2_000_000
    [line] = access_lines(tmp_path)
    assert (line["status"], line["plugin"], line["reason"]) == (504, "integration", "integration_timeout")


async def test_unreachable_backend_answers_502(make_gateway):
    _, gate = make_gateway({"api.yaml": "kind: Api\n"}, upstream=f"http://127.0.0.1:{free_port()}")
    f = await drive(gate, flow("/x"))
    assert f.response.status_code == 502
    assert json.loads(f.response.content) == {"message": "Network error communicating with endpoint"}
    assert f.metadata["sidegate"]["trace"][-1]["reason"] == "backend_unreachable"
    assert "mitmproxy" not in f.response.text


async def test_oversized_backend_answer_is_502(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": "kind: Api\n"}, upstream=backend.url)
    gate.integrations.max_response_body = 10
    f = await drive(gate, flow("/x"))
    assert f.response.status_code == 502
    assert f.metadata["sidegate"]["trace"][-1]["reason"] == "backend_response_too_large"


async def test_head_keeps_the_backends_content_length(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": "kind: Api\n"}, upstream=backend.url)
    f = await drive(gate, flow("/x", method="HEAD"))
    assert f.response.status_code == 200 and f.response.content == b""
    assert int(f.response.headers["content-length"]) > 0
