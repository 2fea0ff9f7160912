"""Integration request/response mapping: parameters, templates, passthrough, selection, remapping."""

from __future__ import annotations

import json

import pytest
from conftest import drive, write_policies
from mitmproxy.test import tflow, tutils

from addons.policy.errors import PolicyError
from addons.policy.policyset import load_policy_set


def api(backend_url: str) -> str:
    return f"""
        kind: Api
        name: shop
        stage: prod
        stage_variables: {{table: books, version: v2}}
        routes:
          GET /books/{{id}}:
            integration:
              type: http
              uri: "{backend_url}/${{stageVariables.version}}/items/{{itemId}}"
              method: POST
              request_parameters:
                integration.request.path.itemId: method.request.path.id
                integration.request.header.x-table: stageVariables.table
                integration.request.header.x-request: context.requestId
                integration.request.querystring.fields: method.request.querystring.select
                integration.request.header.x-static: "'fixed'"
              request_templates:
                application/json: '{{"TableName": "$stageVariables.table", "Key": "$input.params(''id'')"}}'
              responses:
                - selection_pattern: '2\\d\\d'
                  status: 200
                  response_parameters:
                    method.response.header.x-backend-path: integration.response.body.path
                    method.response.header.x-kind: "'book'"
                  templates:
                    application/json: '{{"id": "$input.params(''id'')", "method": "$input.path(''$.method'')"}}'
                - selection_pattern: '4\\d\\d'
                  status: 400
                  templates:
                    application/json: '{{"error": "not found"}}'
          GET /status/{{code}}:
            integration:
              type: http
              uri: "{backend_url}/status/{{code}}"
              responses:
                - selection_pattern: '2\\d\\d'
                  status: 200
          POST /strict:
            integration:
              type: http
              uri: "{backend_url}/strict"
              passthrough_behavior: WHEN_NO_TEMPLATES
              request_templates:
                application/json: '{{"wrapped": $input.json(''$'')}}'
          POST /never:
            integration:
              type: http
              uri: "{backend_url}/never"
              passthrough_behavior: NEVER
          POST /loose:
            integration:
              type: http
              uri: "{backend_url}/loose"
              request_templates:
                application/json: '{{"wrapped": $input.json(''$'')}}'
          GET /mock:
            integration:
              type: mock
              request_templates:
                application/json: '#if($input.params(''ok'') == "yes"){{"statusCode": 200}}#else{{"statusCode": 404}}#end'
              responses:
                - selection_pattern: '200'
                  status: 200
                  templates: {{application/json: '{{"mock": true}}'}}
                - status: 404
                  templates: {{application/json: '{{"mock": "missing"}}'}}
          GET /raw:
            integration:
              type: http
              uri: "{backend_url}/raw"
          GET /broken:
            integration:
              type: http
              uri: "{backend_url}/truncated"
              responses:
                - status: 200
                  templates: {{application/json: '{{"n": $input.path(''$.n'')}}'}}
    """


def req(path, method="GET", body=b"", **headers):
    hdrs = [(b"host", b"x")] + [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return tflow.tflow(req=tutils.treq(method=method.encode(), path=path.encode(), headers=hdrs, content=body))


async def test_get_in_post_out_with_template_and_parameter_mapping(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": api(backend.url)})
    f = await drive(gate, req("/books/42?select=title&other=x", x_client="c"))
    seen = backend.seen[-1]
    assert (seen["method"], seen["path"]) == ("POST", "/v2/items/42?fields=title")  # only mapped query strings
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["x-table"] == "books" and headers["x-static"] == "fixed"
    assert headers["x-request"] == f.metadata["sidegate"]["request_id"]
    assert "x-client" not in headers  # non-proxy: unmapped client headers stay behind
    assert json.loads(seen["body"]) == {"TableName": "books", "Key": "42"}
    assert f.response.status_code == 200
    assert json.loads(f.response.content) == {"id": "42", "method": "POST"}
    assert f.response.headers["x-backend-path"] == "/v2/items/42?fields=title"
    assert f.response.headers["x-kind"] == "book"
    assert f.response.headers["content-type"] == "application/json"
    assert "x-backend" not in f.response.headers  # unmapped backend headers stay behind
    assert f.response.headers["x-amzn-Remapped-Server"].startswith("Python")  # API Gateway's remapping


@pytest.mark.parametrize(("code", "status"), [("201", 200), ("418", 500)])
async def test_integration_response_selection(make_gateway, backend, code, status):
    _, gate = make_gateway({"api.yaml": api(backend.url)})
    f = await drive(gate, req(f"/status/{code}"))
    assert f.response.status_code == status
    if status == 500:
        assert json.loads(f.response.content) == {"message": "Internal server error"}
        assert f.metadata["sidegate"]["reason"] == "no_integration_response"


async def test_error_statuses_select_their_own_response(make_gateway, backend):
    files = {
        "api.yaml": api(backend.url).replace(
            'uri: "' + backend.url + '/${stageVariables.version}/items/{itemId}"',
            'uri: "' + backend.url + '/status/404"',
        )
    }
    _, gate = make_gateway(files)
    f = await drive(gate, req("/books/1"))
    assert f.response.status_code == 400 and json.loads(f.response.content) == {"error": "not found"}


@pytest.mark.parametrize(
    ("path", "content_type", "status", "body"),
    [
        ("/strict", "application/json", 200, {"wrapped": {"a": 1}}),
        ("/strict", "text/plain", 415, None),  # templates exist, none for this type
        ("/never", "application/json", 415, None),  # NEVER: no template at all
        ("/loose", "text/plain", 200, "passthrough"),  # WHEN_NO_MATCH
    ],
)
async def test_passthrough_behaviours(make_gateway, backend, path, content_type, status, body):
    _, gate = make_gateway({"api.yaml": api(backend.url)})
    payload = b'{"a": 1}' if content_type == "application/json" else b"plain text"
    f = await drive(gate, req(path, "POST", payload, content_type=content_type))
    assert f.response.status_code == status
    if status == 415:
        assert json.loads(f.response.content) == {"message": "Unsupported Media Type"}
        assert backend.seen == []
    elif body == "passthrough":
        assert backend.seen[-1]["body"] == b"plain text"
    else:
        assert json.loads(backend.seen[-1]["body"]) == body


async def test_mock_integration_answers_from_its_template(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": api(backend.url)})
    ok = await drive(gate, req("/mock?ok=yes"))
    missing = await drive(gate, req("/mock"))
    assert (ok.response.status_code, json.loads(ok.response.content)) == (200, {"mock": True})
    assert (missing.response.status_code, json.loads(missing.response.content)) == (404, {"mock": "missing"})
    assert backend.seen == []


async def test_no_integration_responses_passes_the_answer_with_remapped_headers(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": api(backend.url)})
    f = await drive(gate, req("/raw"))
    assert f.response.status_code == 200 and "x-amzn-Remapped-Server" in f.response.headers
    assert "server" not in {k.lower() for k in f.response.headers}


async def test_invalid_backend_payload_for_a_json_template_is_502(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": api(backend.url)})
    f = await drive(gate, req("/broken"))  # the backend's JSON is cut short
    assert f.response.status_code == 502
    assert f.metadata["sidegate"]["reason"] == "invalid_backend_payload"


def test_template_and_mapping_errors_are_load_errors(tmp_path):
    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": """
        kind: Api
        routes:
          GET /a:
            integration:
              type: http
              uri: http://127.0.0.1:1/a
              request_parameters:
                integration.request.header.Content-Length: "'5'"
                integration.request.header.x-ok: method.request.cookie.sid
    """
        },
    )
    with pytest.raises(PolicyError) as e:
        load_policy_set(tmp_path / "policies")
    text = str(e.value)
    assert (
        "integration.request_parameters['integration.request.header.Content-Length']: header Content-Length cannot be mapped"
        in text
    )
    assert "expected method.request.{path,querystring,multivaluequerystring,header,multivalueheader}.<name>" in text
    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": """
        kind: Api
        routes:
          GET /a:
            integration:
              type: http
              uri: http://127.0.0.1:1/a
              request_templates:
                application/json: |
                  {"a": 1}
                  #foreach($x in $input.path('$'))
    """
        },
    )
    with pytest.raises(PolicyError, match=r"policies/api.yaml:\d+:1: template: template line \d+: "):
        load_policy_set(tmp_path / "policies")


def validated_api() -> str:
    return """
        kind: Api
        routes:
          GET /checked:
            validate_responses: true
            response_models:
              200:
                application/json: {type: object, required: [method], properties: {method: {type: string}}}
          GET /strict-shape:
            validate_responses: true
            response_models:
              200:
                application/json: {type: object, required: [title]}
          GET /truncated:
            validate_responses: true
            response_models:
              200:
                application/json: {type: object}
          GET /unchecked:
            response_models:
              200:
                application/json: {type: object, required: [title]}
    """


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/checked", 200, None),
        ("/strict-shape", 502, "response_model_mismatch"),
        ("/truncated", 502, "response_not_json"),
        ("/unchecked", 200, None),  # models declared, validation switched off
    ],
)
async def test_method_response_models_when_switched_on(make_gateway, backend, path, status, reason):
    _, gate = make_gateway({"api.yaml": validated_api()}, upstream=backend.url)
    f = await drive(gate, req(path))
    assert f.response.status_code == status
    assert f.metadata["sidegate"]["reason"] == reason
    if status == 502:
        assert json.loads(f.response.content) == {"message": "Internal server error"}


async def test_a_failing_template_is_a_500_naming_the_template(make_gateway, backend, caplog):
    import logging

    policy = f"""
        kind: Api
        routes:
          GET /loop:
            integration:
              type: http
              uri: "{backend.url}/loop"
              request_templates:
                application/json: '#foreach($i in [1..5000])$i#end'
    """
    _, gate = make_gateway({"api.yaml": policy})
    with caplog.at_level(logging.WARNING, logger="sidegate"):
        f = await drive(gate, req("/loop"))
    assert f.response.status_code == 500
    assert json.loads(f.response.content) == {"message": "Internal server error"}
    entry = next(e for e in f.metadata["sidegate"]["trace"] if e["plugin"] == "integration_mapping")
    assert entry["reason"] == "request_template_failed"
    assert entry["detail"]["error"].startswith("policies/api.yaml:")
    assert any(
        "request template failed" in r.getMessage() and "policies/api.yaml:" in r.getMessage() for r in caplog.records
    )
    assert backend.seen == []


async def test_templates_see_identity_key_and_request_time(make_gateway, backend, monkeypatch):
    import re

    monkeypatch.setenv("TEMPLATE_KEY", "templateKEY0123456789abc")
    files = {
        "api.yaml": """
            kind: Api
            routes:
              GET /who:
                api_key_required: true
                integration:
                  type: mock
                  request_templates: {application/json: '{"statusCode": 200}'}
                  responses:
                    - status: 200
                      templates:
                        application/json: '{"id": "$context.identity.apiKeyId", "key": "$context.identity.apiKey", "time": "$context.requestTime", "ip": "$context.identity.sourceIp"}'
        """,
        "plans.yaml": """
            kind: UsagePlans
            quota_file: state/q.sqlite
            plans: {basic: {}}
            keys: {partner: {value: {secret_env: TEMPLATE_KEY}, plan: basic}}
        """,
    }
    _, gate = make_gateway(files)
    f = await drive(gate, req("/who", x_api_key="templateKEY0123456789abc"))
    body = json.loads(f.response.content)
    assert body["id"] == "partner" and body["key"] == "templateKEY0123456789abc"
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", body["time"])
    assert body["ip"] == f.client_conn.peername[0]
