"""Integration request and response mapping. Checkpoints: integration request (parameters,
request templates, passthrough), integration response (selection, response templates, header
mapping). Policy: ``kind: Api`` route ``integration`` blocks of type ``http``, ``aws`` and ``mock``.

http_proxy integrations pass through untouched (only ``request_parameters`` apply). The others
follow API Gateway's non-proxy rules: the backend sees only what is mapped (parameters, the
template's body), the client sees the status of the integration response whose
``selection_pattern`` matches the backend's status (the one without a pattern is the default; none
matching is 500), with the mapped headers and the rendered response template. Response headers
API Gateway remaps (``Date``, ``Server``, ...) come out as ``x-amzn-Remapped-<Name>``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from jsonschema.exceptions import best_match
from mitmproxy import http
from mitmproxy.net.http import status_codes

from addons.decision import Exchange, Reject
from addons.mtls import client_cert_context
from addons.policy.models import ApiPolicy, HttpIntegration
from addons.vtl import InvalidPayloadError, RenderContext, Template, TemplateError, compile_template
from addons.vtl.errors import Abort
from addons.vtl.jsonpath import MISSING, compile_path, evaluate

log = logging.getLogger("sidegate")

BACKEND_REQUEST = "backend_request"
# API Gateway's words for a backend answer it cannot use (e.g. a malformed proxy response): 502.
BAD_ANSWER = "Internal server error"
JSON = "application/json"
# Non-proxy answers: these backend headers reach the client renamed (API Gateway's list).
REMAPPED = frozenset(
    ["connection", "content-length", "date", "server", "authorization", "content-md5", "expect", "host",
     "max-forwards", "proxy-authenticate", "trailer", "upgrade", "user-agent", "www-authenticate"]
)  # fmt: skip
DROPPED = frozenset(["transfer-encoding"])
_STATUS_CODE = re.compile(r'"?statusCode"?\s*:\s*"?(\d{3})')


@dataclass(slots=True)
class BackendRequest:
    """What the integration request checkpoint decided to send (http, aws, mock)."""

    method: str
    headers: list[tuple[str, str]]
    query: list[tuple[str, str]]
    path_params: dict[str, str]
    body: bytes
    mock_status: int | None = None  # mock: no backend call


@dataclass(frozen=True, slots=True)
class CompiledResponse:
    pattern: Any | None  # RE2, full match on the status code; None: the default response
    status: int
    parameters: tuple[tuple[str, str], ...]  # (header name, source expression)
    templates: dict[str, Template]


@dataclass(frozen=True, slots=True)
class CompiledIntegration:
    spec: HttpIntegration
    request_templates: dict[str, Template]
    responses: tuple[CompiledResponse, ...]
    parameters: tuple[tuple[str, str, str], ...] = field(default=())  # (location, name, source)


def compile_integrations(api: ApiPolicy, source_of: Any) -> dict[str, CompiledIntegration]:
    """Compile every route's templates once; TemplateError carries the template's file:line."""
    out = {}
    for key, route in api.routes.items():
        spec = route.integration
        request_templates = {
            media: compile_template(text, source=source_of("routes", key, "integration", "request_templates", media))
            for media, text in spec.request_templates.items()
        }
        responses = tuple(
            CompiledResponse(
                r.selection_pattern,
                r.status,
                tuple((target.split(".", 3)[3], src) for target, src in r.response_parameters.items()),
                {
                    media: compile_template(
                        text, source=source_of("routes", key, "integration", "responses", i, "templates", media)
                    )
                    for media, text in r.templates.items()
                },
            )
            for i, r in enumerate(spec.responses)
        )
        parameters = tuple(
            (target.split(".")[2], target.split(".", 3)[3], src) for target, src in spec.request_parameters.items()
        )
        out[key] = CompiledIntegration(spec, request_templates, responses, parameters)
    return out


def context_vars(ex: Exchange) -> dict[str, Any]:
    """``$context`` for templates and ``context.<var>`` mappings (API Gateway's names)."""
    req = ex.request
    api = ex.policy.api
    peer = ex.flow.client_conn.peername[0] if ex.flow.client_conn.peername else ""
    key = ex.vars.get("usage_plan_key")
    return {
        "requestId": ex.request_id,
        "extendedRequestId": ex.request_id,
        "apiId": api.name,
        "stage": api.stage,
        "httpMethod": req.method,
        "resourcePath": ex.route.resource_path if ex.route else ex.path,
        "path": ex.path,
        "protocol": "HTTP/1.1",
        "domainName": req.pretty_host,
        "requestTimeEpoch": int(ex.started * 1000),
        # API Gateway's CLF form: 24/Nov/2026:18:42:23 +0000
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(ex.started)),
        "identity": {
            "sourceIp": peer,
            "userAgent": req.headers.get("user-agent", ""),
            "apiKeyId": key.key_id if key is not None else "",
            "apiKey": ex.request.headers.get(key.header, "") if key is not None else "",
            "clientCert": client_cert_context(ex) or {},  # mTLS (kind: ClientTls)
        },
        "authorizer": dict(ex.vars.get("authorizer", {})),
    }


def _lookup_context(ctx: dict[str, Any], dotted: str) -> str:
    node: Any = ctx
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    return node if isinstance(node, str) else json.dumps(node) if isinstance(node, dict | list) else str(node)


def _json_path(document: Any, path: str) -> str | None:
    try:
        value = evaluate(compile_path("$." + path), document)
    except Abort:
        return None
    if value is MISSING:
        return None
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _shared_source(ex: Exchange, expr: str) -> tuple[bool, str | None]:
    """Sources both directions share: 'static', stageVariables.<n>, context.<var>."""
    if expr.startswith("'"):
        return True, expr[1:-1]
    if expr.startswith("stageVariables."):
        return True, ex.stage_variables.get(expr.split(".", 1)[1])
    if expr.startswith("context."):
        return True, _lookup_context(context_vars(ex), expr.split(".", 1)[1])
    return False, None


def _pick(values: list[str], single: bool) -> str | None:
    """Single-value mappings take the last value; multivalue ones join with commas."""
    if not values:
        return None
    return values[-1] if single else ",".join(values)


def request_source(ex: Exchange, expr: str) -> str | None:
    """The value of a request mapping expression, or None when it has none."""
    shared, value = _shared_source(ex, expr)
    if shared:
        return value
    if expr == "method.request.body":
        return ex.request.get_text(strict=False) or ""
    if expr.startswith("method.request.body."):
        ok, doc = ex.json_body()
        return _json_path(doc, expr.removeprefix("method.request.body.")) if ok else None
    _, _, kind, name = expr.split(".", 3)
    if kind == "path":
        return ex.path_params.get(name)
    values = ex.request.query.get_all(name) if "querystring" in kind else ex.request.headers.get_all(name)
    return _pick(values, not kind.startswith("multivalue"))


def response_source(ex: Exchange, expr: str, backend: http.Response) -> str | None:
    shared, value = _shared_source(ex, expr)
    if shared:
        return value
    if expr == "integration.response.body":
        return backend.get_text(strict=False) or ""
    if expr.startswith("integration.response.body."):
        try:
            doc = json.loads(backend.get_content(strict=False) or b"null")
        except ValueError:
            return None
        return _json_path(doc, expr.removeprefix("integration.response.body."))
    _, _, kind, name = expr.split(".", 3)
    return _pick(backend.headers.get_all(name), kind == "header")


def _render_context(ex: Exchange, body: bytes | str) -> RenderContext:
    req = ex.request
    cached = ex.vars.get("_render_params")
    if cached is None:
        # Built once per request from the raw fields (the last value wins, as in API Gateway):
        # mitmproxy's per-key accessors cost far more than one pass over the fields.
        cached = (
            dict(req.query.fields),
            {k.decode("latin-1"): v.decode("latin-1") for k, v in req.headers.fields},
            context_vars(ex),
        )
        ex.vars["_render_params"] = cached
    query, headers, context = cached
    return RenderContext(
        body=body,
        path_params=ex.path_params,
        query_params=query,
        header_params=headers,
        context=context,
        stage_variables=ex.stage_variables,
    )


class IntegrationMapping:
    """Built from the Api: prepares non-proxy backend requests and maps their answers."""

    name = "integration_mapping"

    def __init__(self, integrations: dict[str, CompiledIntegration], source: str) -> None:
        self._integrations = integrations
        self.source = source

    def _compiled(self, ex: Exchange) -> CompiledIntegration | None:
        return self._integrations.get(ex.route.key) if ex.route is not None else None

    def integration_request(self, ex: Exchange) -> Reject | None:
        compiled = self._compiled(ex)
        if compiled is None:
            return None
        spec = compiled.spec
        req = ex.request
        proxy = spec.type == "http_proxy"
        headers: list[tuple[str, str]] = []
        query: list[tuple[str, str]] = [] if not proxy else list(req.query.items(multi=True))
        path_params = dict(ex.path_params)
        for location, name, expr in compiled.parameters:
            value = request_source(ex, expr)
            if value is None:
                continue
            if location == "header":
                headers.append((name, value))
            elif location == "querystring":
                query = [(k, v) for k, v in query if k != name] + [(name, value)]
            else:
                path_params[name] = value
        if proxy:
            if compiled.parameters:  # mapped headers and query strings on top of the forwarded request
                for name, value in headers:
                    req.headers[name] = value
                req.query = query
                ex.vars["mapped_path_params"] = path_params
            return None
        body: bytes = b""
        media = req.headers.get("content-type", JSON).split(";", 1)[0].strip().lower() or JSON
        templates = compiled.request_templates
        template = templates.get(media)
        if template is None:
            # API Gateway's passthrough table: NEVER refuses whenever no template matches;
            # WHEN_NO_TEMPLATES only when templates exist (just not for this type).
            behaviour = spec.passthrough_behavior
            if behaviour == "NEVER" or (behaviour == "WHEN_NO_TEMPLATES" and templates):
                return Reject("UNSUPPORTED_MEDIA_TYPE", reason="no_request_template", source=self.source)
            body = req.get_content(strict=False) or b""  # passthrough
        else:
            try:
                result = template.render(_render_context(ex, req.get_content(strict=False) or b""))
            except InvalidPayloadError:
                return Reject("BAD_REQUEST_BODY", reason="invalid_request_payload", source=self.source)
            except TemplateError as e:
                ex.details[self.name] = {"error": str(e)}  # names the template's file:line, never request data
                log.warning("sidegate: request template failed (request %s): %s", ex.request_id, e)
                return Reject("API_CONFIGURATION_ERROR", reason="request_template_failed", source=self.source)
            body = result.text.encode()
            override = result.request_override
            for name, values in override.header.items():
                headers = [(k, v) for k, v in headers if k.lower() != name.lower()] + [(name, ",".join(values))]
            for name, values in override.querystring.items():
                query = [(k, v) for k, v in query if k != name] + [(name, v) for v in values]
            path_params.update(override.path)
        mock_status = None
        if spec.type == "mock":
            m = _STATUS_CODE.search(body.decode("utf-8", "replace")) if template is not None else None
            mock_status = int(m.group(1)) if m else 200
        if template is not None or spec.type == "aws":
            headers.append(("content-type", media if spec.type != "aws" else "application/x-amz-json-1.0"))
        method = req.method if spec.method == "ANY" else spec.method
        ex.vars[BACKEND_REQUEST] = BackendRequest(
            "POST" if spec.type == "aws" else method, headers, query, path_params, body, mock_status
        )
        return None

    def integration_response(self, ex: Exchange) -> Reject | None:
        reject = self._map_response(ex)
        return reject or self._check_response_model(ex)

    def _check_response_model(self, ex: Exchange) -> Reject | None:
        """The method response's declared model, when the route asks for response validation."""
        route = ex.policy.api.routes.get(ex.route.key) if ex.route is not None else None
        response = ex.response
        if route is None or not route.validate_responses or response is None:
            return None
        models = route.response_models.get(response.status_code)
        if not models:
            return None
        media = response.headers.get("content-type", JSON).split(";", 1)[0].strip().lower()
        validator = models.get(media) or models.get("$default")
        if validator is None:
            return None
        try:
            document = json.loads(response.get_content(strict=False) or b"null")
        except ValueError:
            ex.details[self.name] = {"response_model": "body is not JSON"}
            return Reject("INTEGRATION_FAILURE", reason="response_not_json", source=self.source, message=BAD_ANSWER)
        error = best_match(validator.iter_errors(document))
        if error is None:
            return None
        pointer = "/" + "/".join(str(p) for p in error.absolute_path)
        ex.details[self.name] = {"response_model": {"pointer": pointer, "keyword": str(error.validator)}}
        return Reject("INTEGRATION_FAILURE", reason="response_model_mismatch", source=self.source, message=BAD_ANSWER)

    def _map_response(self, ex: Exchange) -> Reject | None:
        compiled = self._compiled(ex)
        backend = ex.response
        if compiled is None or backend is None or compiled.spec.type == "http_proxy":
            return None
        if not compiled.responses:
            _remap_headers(backend)  # no integration responses declared: the answer passes, remapped
            return None
        code = str(backend.status_code)
        chosen = next((r for r in compiled.responses if r.pattern is not None and r.pattern.fullmatch(code)), None)
        chosen = chosen or next((r for r in compiled.responses if r.pattern is None), None)
        ex.details[self.name] = {"backend_status": backend.status_code}
        if chosen is None:
            return Reject("API_CONFIGURATION_ERROR", reason="no_integration_response", source=self.source)
        ex.details[self.name]["status"] = chosen.status
        headers: list[tuple[str, str]] = []
        for name, expr in chosen.parameters:
            value = response_source(ex, expr, backend)
            if value is not None:
                headers.append((name, value))
        body = backend.get_content(strict=False) or b""
        content_type = backend.headers.get("content-type", JSON)
        status = chosen.status
        if chosen.templates:
            accept = ex.request.headers.get("accept", JSON).split(",", 1)[0].split(";", 1)[0].strip().lower()
            media = accept if accept in chosen.templates else next(iter(chosen.templates))
            try:
                result = chosen.templates[media].render(_render_context(ex, body))
            except InvalidPayloadError:
                return Reject(
                    "INTEGRATION_FAILURE", reason="invalid_backend_payload", source=self.source, message=BAD_ANSWER
                )
            except TemplateError as e:
                ex.details[self.name]["error"] = str(e)
                log.warning("sidegate: response template failed (request %s): %s", ex.request_id, e)
                return Reject("API_CONFIGURATION_ERROR", reason="response_template_failed", source=self.source)
            body, content_type = result.text.encode(), media
            override = result.response_override
            if override.status is not None:
                status = override.status
            for name, values in override.header.items():
                headers = [(k, v) for k, v in headers if k.lower() != name.lower()] + [(name, ",".join(values))]
        fields: list[tuple[bytes, bytes]] = [(b"content-type", content_type.encode())]
        for k, v in backend.headers.fields:
            lower = k.lower().decode("latin-1")
            if lower in REMAPPED and lower != "content-length":
                fields.append((b"x-amzn-Remapped-" + k, v))
        fields += [(k.encode(), v.encode()) for k, v in headers]
        # The backend's answer object becomes the client's: cheaper than building a new one.
        backend.status_code = status
        backend.reason = status_codes.RESPONSES.get(status, "")
        backend.headers = http.Headers(fields)
        backend.content = body  # sets Content-Length
        return None


def _remap_headers(response: http.Response) -> None:
    for name in list(response.headers.keys()):
        lower = name.lower()
        if lower in DROPPED:
            del response.headers[name]
        elif lower in REMAPPED and lower != "content-length":
            values = response.headers.get_all(name)
            del response.headers[name]
            response.headers.set_all(f"x-amzn-Remapped-{name}", values)
