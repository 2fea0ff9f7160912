"""Request validation: required parameters, then the body against a draft 4 model."""

from __future__ import annotations

import json

import pytest
from conftest import drive, write_policies
from mitmproxy.test import tflow, tutils

from addons.policy.errors import PolicyError
from addons.policy.policyset import load_policy_set

API = """
    kind: Api
    routes:
      POST /books/{id}:
        request_validator: all
        request_parameters:
          method.request.path.id: true
          method.request.querystring.version: true
          method.request.header.x-client: true
          method.request.querystring.optional: false
        request_models:
          application/json:
            type: object
            required: [title, author]
            properties:
              title: {type: string, minLength: 1}
              author: {type: string}
              pages: {type: integer, minimum: 1}
          $default: {file: models/any.json}
      POST /params-only:
        request_validator: params
        request_parameters: {method.request.header.x-client: true}
        request_models:
          application/json: {type: object, required: [never]}
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "any.json").write_text(json.dumps({"type": "array"}))
    return {"api.yaml": API}


def req(path="/books/1?version=2", body=b'{"title": "T", "author": "A"}', **headers):
    hdrs = [(b"host", b"x"), (b"x-client", b"c"), (b"content-type", b"application/json")]
    for k, v in headers.items():
        name = k.replace("_", "-").encode()
        hdrs = [h for h in hdrs if h[0] != name] + ([] if v is None else [(name, v.encode())])
    return tflow.tflow(req=tutils.treq(method=b"POST", path=path.encode(), headers=hdrs, content=body))


async def test_valid_request_passes(make_gateway, backend, files):
    _, gate = make_gateway(files, upstream=backend.url)
    f = await drive(gate, req())
    assert f.response.status_code == 200 and len(backend.seen) == 1


@pytest.mark.parametrize(("path", "headers", "missing"), [
    ("/books/1", {}, "version"),
    ("/books/1?version=", {}, "version"),  # present but blank
    ("/books/1?version=2", {"x_client": None}, "x-client"),
    ("/books/1?version=2", {"x_client": "  "}, "x-client"),
    ("/books/1", {"x_client": None}, "version, x-client"),
])
async def test_missing_parameters_are_400_with_their_names(make_gateway, backend, files, path, headers, missing):
    _, gate = make_gateway(files, upstream=backend.url)
    f = await drive(gate, req(path, b"not json at all", **headers))  # parameters are checked before the body
    assert f.response.status_code == 400
    assert json.loads(f.response.content) == {"message": f"Missing required request parameters: [{missing}]"}
    assert f.response.headers["x-amzn-ErrorType"] == "BadRequestException"
    assert backend.seen == []


@pytest.mark.parametrize(("body", "pointer", "keyword"), [
    (b'{"title": "T"}', "/", "required"),
    (b'{"title": "", "author": "A"}', "/title", "minLength"),
    (b'{"title": "T", "author": "A", "pages": 0}', "/pages", "minimum"),
    (b'{"title": "T", "author": "A", "pages": "many"}', "/pages", "type"),
    (b"{broken", "(root)", "json"),
    (b"", "/", "required"),  # an empty body counts as {}
])
async def test_invalid_body_is_400_and_the_trace_names_pointer_and_keyword(make_gateway, backend, files, body, pointer, keyword):
    _, gate = make_gateway(files, upstream=backend.url)
    f = await drive(gate, req(body=body))
    assert f.response.status_code == 400
    assert json.loads(f.response.content) == {"message": "Invalid request body"}
    entry = [e for e in f.metadata["sidegate"]["trace"] if e["plugin"] == "request_validation"][-1]
    assert entry["detail"]["pointer"] == pointer and entry["detail"]["keyword"] == keyword
    assert b"many" not in json.dumps(f.metadata).encode()  # never the value


async def test_model_is_chosen_by_content_type_with_default_fallback(make_gateway, backend, files):
    _, gate = make_gateway(files, upstream=backend.url)
    xml = await drive(gate, req(body=b"[1, 2]", content_type="text/plain"))  # $default: an array
    assert xml.response.status_code == 200
    bad = await drive(gate, req(body=b'{"a": 1}', content_type="text/plain"))
    assert bad.response.status_code == 400
    no_type = await drive(gate, req(body=b'{"title": "T"}', content_type=None))  # treated as application/json
    assert no_type.response.status_code == 400


async def test_params_only_validator_skips_the_body(make_gateway, backend, files):
    _, gate = make_gateway(files, upstream=backend.url)
    f = await drive(gate, req("/params-only", body=b'{"x": 1}'))
    assert f.response.status_code == 200


async def test_validation_error_string_reaches_gateway_response_templates(make_gateway, backend, files):
    files = {**files, "gr.yaml": "kind: GatewayResponses\nresponses:\n  BAD_REQUEST_BODY:\n"
                                 "    body: '{\"message\": \"$context.error.validationErrorString\"}'\n"}
    _, gate = make_gateway(files, upstream=backend.url)
    f = await drive(gate, req(body=b'{"title": "T"}'))
    assert json.loads(f.response.content) == {
        "message": "Request body does not match model schema for content type application/json: [required failed at /]"
    }


def test_invalid_models_are_load_errors_with_position(tmp_path):
    write_policies(tmp_path / "policies", {"api.yaml": """
        kind: Api
        routes:
          POST /a:
            request_validator: all
            request_parameters: {method.request.body.x: true}
            request_models:
              application/json: {type: objekt}
              text/plain: {file: models/missing.json}
    """})
    with pytest.raises(PolicyError) as e:
        load_policy_set(tmp_path / "policies")
    lines = str(e.value).splitlines()
    assert lines[0].startswith("policies/api.yaml:5:26: routes['POST /a'].request_parameters['method.request.body.x']: expected method.request.path.<name>")
    assert lines[1].startswith("policies/api.yaml:7:7: routes['POST /a'].request_models['application/json']: invalid JSON Schema (draft 4) at type:")
    assert lines[2] == "policies/api.yaml:8:7: routes['POST /a'].request_models['text/plain']: cannot read model file models/missing.json (No such file or directory)"
