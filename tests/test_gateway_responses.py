"""Gateway responses: API Gateway's defaults, customisation, DEFAULT_4XX/5XX fallback, templates."""

from __future__ import annotations

import json

import pytest
from conftest import write_policies
from mitmproxy.test import tflow, tutils

from addons.decision import Exchange, Reject
from addons.gateway_responses import RESPONSE_TYPES, Responder
from addons.policy.policyset import empty_policy_set, load_policy_set

EXPECTED = {  # API Gateway's REST catalogue (reference section 1.4); INTEGRATION_FAILURE: see module docstring
    "MISSING_AUTHENTICATION_TOKEN": (403, "MissingAuthenticationTokenException", "Missing Authentication Token"),
    "INVALID_API_KEY": (403, "ForbiddenException", "Forbidden"),
    "WAF_FILTERED": (403, "ForbiddenException", "Forbidden"),
    "UNAUTHORIZED": (401, "UnauthorizedException", "Unauthorized"),
    "THROTTLED": (429, "TooManyRequestsException", "Too Many Requests"),
    "QUOTA_EXCEEDED": (429, "LimitExceededException", "Limit Exceeded"),
    "BAD_REQUEST_BODY": (400, "BadRequestException", "Invalid request body"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "BadRequestException", "Unsupported Media Type"),
    "REQUEST_TOO_LARGE": (413, "BadRequestException", "Request Too Long"),
    "API_CONFIGURATION_ERROR": (500, "InternalServerErrorException", "Internal server error"),
    "INTEGRATION_TIMEOUT": (504, "InternalServerErrorException", "Endpoint request timed out"),
    "INTEGRATION_FAILURE": (502, "InternalServerErrorException", "Network error communicating with endpoint"),
}


def exchange(policy=None, path="/books/1") -> Exchange:
    f = tflow.tflow(req=tutils.treq(path=path, headers=((b"host", b"x"), (b"origin", b"https://a.example"))))
    return Exchange(f, policy or empty_policy_set())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_catalogue(name):
    ex = exchange()
    answer = Responder(None).render(Reject(name), ex)
    status, error_type, message = EXPECTED[name]
    headers = dict(answer.headers)
    assert answer.status == status
    assert headers["x-amzn-ErrorType"] == error_type
    assert headers["content-type"] == "application/json"
    assert json.loads(answer.body) == {"message": message}


def test_authorizer_configuration_error_has_null_message():
    answer = Responder(None).render(Reject("AUTHORIZER_CONFIGURATION_ERROR"), exchange())
    assert (answer.status, json.loads(answer.body)) == (500, {"message": None})


def test_every_type_renders():
    for name, rt in RESPONSE_TYPES.items():
        if rt.status is None:
            continue
        assert Responder(None).render(Reject(name), exchange()).status == rt.status


def test_customised_type_and_fallbacks(tmp_path):
    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": "kind: Api\nstage: prod\nstage_variables: {team: books}\n",
            "gr.yaml": """
            kind: GatewayResponses
            responses:
              DEFAULT_4XX:
                status: 418
                headers: {cache-control: no-store, x-team: $stageVariables.team}
                body: '{"error": $context.error.messageString, "type": "$context.error.responseType"}'
              DEFAULT_5XX:
                headers: {retry-after: "5"}
              MISSING_AUTHENTICATION_TOKEN:
                status: 404
                headers: {x-origin: $method.request.header.origin}
                body: '{"message": "Not Found", "requestId": "${context.requestId}", "stage": "$context.stage"}'
        """,
        },
    )
    ps = load_policy_set(tmp_path / "policies")
    ex = exchange(ps)
    # a customised type keeps its own status; headers merge over DEFAULT_4XX's
    mat = ps.responder.render(Reject("MISSING_AUTHENTICATION_TOKEN"), ex)
    assert mat.status == 404
    assert json.loads(mat.body) == {"message": "Not Found", "requestId": ex.request_id, "stage": "prod"}
    h = dict(mat.headers)
    assert h["x-origin"] == "https://a.example" and h["cache-control"] == "no-store"
    assert h["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    # an uncustomised 4xx takes DEFAULT_4XX's status, headers and body template
    thr = ps.responder.render(Reject("THROTTLED", headers=(("retry-after", "3"),)), ex)
    assert thr.status == 418
    assert json.loads(thr.body) == {"error": "Too Many Requests", "type": "THROTTLED"}
    assert dict(thr.headers)["x-team"] == "books" and dict(thr.headers)["retry-after"] == "3"
    # 5xx: DEFAULT_5XX has no status, so the type's own stays; its headers apply
    timeout = ps.responder.render(Reject("INTEGRATION_TIMEOUT"), ex)
    assert timeout.status == 504 and dict(timeout.headers)["retry-after"] == "5"
    assert json.loads(timeout.body) == {"message": "Endpoint request timed out"}


def test_plugin_message_and_status_override():
    ex = exchange()
    answer = Responder(None).render(
        Reject("BAD_REQUEST_PARAMETERS", message='Missing required request parameters: [a, "b"]'), ex
    )
    assert json.loads(answer.body) == {"message": 'Missing required request parameters: [a, "b"]'}
    custom = Responder(None).render(Reject("WAF_FILTERED", status=406), ex)
    assert custom.status == 406


def test_unknown_variables_render_empty(tmp_path):
    write_policies(
        tmp_path / "policies",
        {
            "gr.yaml": """
        kind: GatewayResponses
        responses:
          THROTTLED:
            body: '{"a":"$context.nope","b":"$stageVariables.missing","c":"$method.request.path.x","d":"$context.httpMethod"}'
    """
        },
    )
    ps = load_policy_set(tmp_path / "policies")
    answer = ps.responder.render(Reject("THROTTLED"), exchange(ps))
    assert json.loads(answer.body) == {"a": "", "b": "", "c": "", "d": "GET"}
