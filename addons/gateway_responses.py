"""Gateway responses: the answers sidegate makes itself, as API Gateway makes them.

Defaults follow API Gateway's REST catalogue (status, ``x-amzn-ErrorType``, body
``{"message":$context.error.messageString}``). ``kind: GatewayResponses`` customises status,
headers and body template per type; an uncustomised type falls back to ``DEFAULT_4XX`` /
``DEFAULT_5XX`` by its default status class. Templates allow API Gateway's simple substitutions
(``$context.*``, ``$stageVariables.*``, ``$method.request.{header,querystring,path}.*``) and are
compiled once per policy load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from addons.decision import Exchange, Reject
    from addons.policy.models import GatewayResponsesPolicy


@dataclass(frozen=True, slots=True)
class ResponseType:
    status: int | None
    error_type: str | None
    message: str | None


# name -> default status, x-amzn-ErrorType, $context.error.message
RESPONSE_TYPES: dict[str, ResponseType] = {
    "ACCESS_DENIED": ResponseType(403, "AccessDeniedException", "Forbidden"),
    "API_CONFIGURATION_ERROR": ResponseType(500, "InternalServerErrorException", "Internal server error"),
    "AUTHORIZER_CONFIGURATION_ERROR": ResponseType(500, "AuthorizerConfigurationException", None),
    "AUTHORIZER_FAILURE": ResponseType(500, "AuthorizerFailureException", None),
    # sidegate's own: a request mitmproxy could not parse or refused as unsafe.
    "BAD_REQUEST": ResponseType(400, "BadRequestException", "Bad Request"),
    "BAD_REQUEST_BODY": ResponseType(400, "BadRequestException", "Invalid request body"),
    "BAD_REQUEST_PARAMETERS": ResponseType(400, "BadRequestException", "Missing required request parameters"),
    "DEFAULT_4XX": ResponseType(None, None, None),
    "DEFAULT_5XX": ResponseType(None, None, None),
    "EXPIRED_TOKEN": ResponseType(403, "InvalidSignatureException", "Signature expired"),
    # API Gateway's default for INTEGRATION_FAILURE is 504; a sidecar whose backend refuses the
    # connection or answers garbage says 502 Bad Gateway, which is what clients and load balancers expect.
    "INTEGRATION_FAILURE": ResponseType(
        502, "InternalServerErrorException", "Network error communicating with endpoint"
    ),
    "INTEGRATION_TIMEOUT": ResponseType(504, "InternalServerErrorException", "Endpoint request timed out"),
    "INVALID_API_KEY": ResponseType(403, "ForbiddenException", "Forbidden"),
    "INVALID_SIGNATURE": ResponseType(403, "InvalidSignatureException", "Invalid signature"),
    "MISSING_AUTHENTICATION_TOKEN": ResponseType(
        403, "MissingAuthenticationTokenException", "Missing Authentication Token"
    ),
    "QUOTA_EXCEEDED": ResponseType(429, "LimitExceededException", "Limit Exceeded"),
    "REQUEST_TOO_LARGE": ResponseType(413, "BadRequestException", "Request Too Long"),
    "RESOURCE_NOT_FOUND": ResponseType(404, "ResourceNotFoundException", "Not Found"),
    "THROTTLED": ResponseType(429, "TooManyRequestsException", "Too Many Requests"),
    # sidegate's own: a shared store the policy depends on is unavailable (on_store_error: deny).
    "SERVICE_UNAVAILABLE": ResponseType(503, "ServiceUnavailableException", "Service Unavailable"),
    "UNAUTHORIZED": ResponseType(401, "UnauthorizedException", "Unauthorized"),
    "UNSUPPORTED_MEDIA_TYPE": ResponseType(415, "BadRequestException", "Unsupported Media Type"),
    "WAF_FILTERED": ResponseType(403, "ForbiddenException", "Forbidden"),
}  # fmt: skip

DEFAULT_TEMPLATE = '{"message":$context.error.messageString}'
ERROR_TYPE_HEADER = "x-amzn-ErrorType"

_NS = r"(context|stageVariables|method\.request\.(?:header|querystring|path))"
_NAME = r"([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)"
# $context.requestId or ${context.requestId}; the closing brace belongs to the variable only
# when the opening one does (a JSON body's own closing brace must survive).
_VAR = re.compile(rf"\$\{{{_NS}\.{_NAME}\}}|\${_NS}\.{_NAME}")

Lookup = Callable[[str, str], str]
Template = tuple[str | tuple[str, str], ...]


def compile_template(text: str) -> Template:
    """Split a template into literal text and (namespace, name) variables, once."""
    parts: list[str | tuple[str, str]] = []
    pos = 0
    for m in _VAR.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        parts.append((m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4)))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return tuple(parts)


def render_template(template: Template, lookup: Lookup) -> str:
    return "".join(p if isinstance(p, str) else lookup(*p) for p in template)


@dataclass(frozen=True, slots=True)
class CompiledResponse:
    status: int
    error_type: str | None
    message: str | None
    headers: tuple[tuple[str, Template], ...]
    body: Template


@dataclass(frozen=True, slots=True)
class GatewayAnswer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class Responder:
    """Compiled gateway responses of one policy set."""

    def __init__(self, policy: GatewayResponsesPolicy | None) -> None:
        custom = dict(policy.responses) if policy else {}
        self._types: dict[str, CompiledResponse] = {}
        for name, default in RESPONSE_TYPES.items():
            if default.status is None:
                continue
            own = custom.get(name)
            fallback = custom.get("DEFAULT_4XX" if default.status < 500 else "DEFAULT_5XX")
            status = default.status
            if own is not None and own.status is not None:
                status = own.status
            elif own is None and fallback is not None and fallback.status is not None:
                status = fallback.status
            headers = {**(fallback.headers if fallback else {}), **(own.headers if own else {})}
            body = (own.body if own else None) or (fallback.body if fallback else None) or DEFAULT_TEMPLATE
            self._types[name] = CompiledResponse(
                status,
                default.error_type,
                default.message,
                tuple((k, compile_template(v)) for k, v in headers.items()),
                compile_template(body),
            )

    def render(self, reject: Reject, ex: Exchange | None) -> GatewayAnswer:
        compiled = self._types.get(reject.response_type) or self._types["API_CONFIGURATION_ERROR"]
        status = compiled.status
        default = RESPONSE_TYPES.get(reject.response_type)
        # A plugin's explicit status wins only when it differs from the type's default, so a
        # customised status (say MISSING_AUTHENTICATION_TOKEN -> 404) still applies to plugins
        # that merely restate the default.
        if reject.status is not None and (default is None or reject.status != default.status):
            status = reject.status
        message = reject.message if reject.message is not None else compiled.message
        lookup = _lookup_for(ex, reject.response_type, message)
        body = render_template(compiled.body, lookup).encode()
        headers: list[tuple[str, str]] = [("content-type", "application/json")]
        if compiled.error_type:
            headers.append((ERROR_TYPE_HEADER, compiled.error_type))
        headers.extend((k, render_template(t, lookup)) for k, t in compiled.headers)
        headers.extend(reject.headers)
        return GatewayAnswer(status, tuple(headers), body)


def _lookup_for(ex: Exchange | None, response_type: str, message: str | None) -> Lookup:
    context: dict[str, str] = {
        "error.message": message or "",
        "error.messageString": json.dumps(message),
        "error.responseType": response_type,
        "error.validationErrorString": "",
    }
    stage_vars: Mapping[str, str] = {}
    if ex is not None:
        req = ex.flow.request
        api = ex.policy.api
        context.update(
            {
                "requestId": ex.request_id,
                "extendedRequestId": ex.request_id,
                "stage": api.stage,
                "apiId": api.name,
                "httpMethod": req.method,
                "path": ex.path,
                "resourcePath": ex.route.resource_path if ex.route else ex.path,
                "domainName": req.pretty_host,
                "identity.sourceIp": ex.flow.client_conn.peername[0] if ex.flow.client_conn.peername else "",
                "identity.userAgent": req.headers.get("user-agent", ""),
            }
        )
        context.update(ex.vars.get("error_context", {}))
        stage_vars = api.stage_variables

    def lookup(namespace: str, name: str) -> str:
        if namespace == "context":
            return context.get(name, "")
        if namespace == "stageVariables":
            return stage_vars.get(name, "")
        if ex is None:
            return ""
        req = ex.flow.request
        if namespace.endswith("header"):
            return str(req.headers.get(name, ""))
        if namespace.endswith("querystring"):
            return str(req.query.get(name, ""))
        return ex.path_params.get(name, "")

    return lookup
