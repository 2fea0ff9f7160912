"""Policy kinds delivered by the pipeline: ``Api``, ``GatewayResponses`` and ``Plugin``.

Later concerns add their kinds to ``KINDS`` (in their own modules); the loader validates every
document against the model its ``kind`` names.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import jsonschema
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from addons.gateway_responses import RESPONSE_TYPES
from addons.policy.types import POLICY_ROOT, Duration, HttpUrl, Mode, PolicyModel, Regex, Secret
from addons.routing import RouteKey, parse_route_key

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_STAGE_VAR_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_PLUGIN_REF = re.compile(r"^([A-Za-z_][\w.]*:[A-Za-z_]\w*|[A-Za-z0-9_.-]+)$")
MAX_TIMEOUT = 300.0  # API Gateway: 29 s default, raisable to 300 s on REST


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"invalid header name {value!r}")
    return value.lower()


HeaderName = Annotated[str, AfterValidator(_header_name)]


def _route_key(value: str) -> str:
    parse_route_key(value)
    return value


RouteKeyText = Annotated[str, AfterValidator(_route_key)]


_PARAM_REF = re.compile(r"^method\.request\.(path|querystring|header)\.([A-Za-z0-9._$-]+)$")
_MEDIA_TYPE = re.compile(r"^(\$default|[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+)$")


def _param_ref(value: str) -> str:
    if not _PARAM_REF.match(value):
        raise ValueError(
            f"expected method.request.path.<name>, method.request.querystring.<name> or "
            f"method.request.header.<name> (got {value!r})"
        )
    return value


def _media_type(value: str) -> str:
    if not _MEDIA_TYPE.match(value.lower()):
        raise ValueError(f"expected a media type such as application/json, or $default (got {value!r})")
    return value.lower()


def _json_schema(value: Any) -> Any:
    """A JSON Schema draft 4 model: inline, or ``{file: models/book.json}``; checked and compiled once."""
    if isinstance(value, dict) and set(value) == {"file"}:
        path = POLICY_ROOT.get() / str(value["file"])
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ValueError(f"cannot read model file {value['file']} ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"model file {value['file']} is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(value, dict):
        raise ValueError("a model is a JSON Schema object, or {file: path/to/model.json}")
    try:
        jsonschema.Draft4Validator.check_schema(value)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise ValueError(f"invalid JSON Schema (draft 4) at {where}: {e.message}") from None
    return jsonschema.Draft4Validator(value)


JsonSchemaModel = Annotated[
    Any,
    BeforeValidator(_json_schema),
    WithJsonSchema({"type": "object", "description": "JSON Schema draft 4, inline or {file: path}"}),
]


# -- integrations (addons/integration.py, addons/mapping.py) ----------------------------------

_TARGET = re.compile(r"^integration\.request\.(header|querystring|path)\.([A-Za-z0-9._$-]+)$")
_SOURCE = re.compile(
    r"^(method\.request\.(path|querystring|multivaluequerystring|header|multivalueheader)\.[A-Za-z0-9._$-]+"
    r"|method\.request\.body(\.[A-Za-z0-9._$\[\]'*-]+)?|stageVariables\.[A-Za-z0-9_]+|context\.[A-Za-z0-9_.]+"
    r"|'[^']*')$"
)
_RESPONSE_TARGET = re.compile(r"^method\.response\.header\.([A-Za-z0-9._$-]+)$")
_RESPONSE_SOURCE = re.compile(
    r"^(integration\.response\.(header|multivalueheader)\.[A-Za-z0-9._$-]+"
    r"|integration\.response\.body(\.[A-Za-z0-9._$\[\]'*-]+)?|stageVariables\.[A-Za-z0-9_]+"
    r"|context\.[A-Za-z0-9_.]+|'[^']*')$"
)
# API Gateway refuses to map these (a 500 at run time there; a load error here).
FORBIDDEN_MAPPED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "x-amzn-trace-id", "x-amzn-apigateway-api-id"}
)
FORBIDDEN_MAPPED_HEADERS_AWS = FORBIDDEN_MAPPED_HEADERS | {
    "authorization",
    "connection",
    "expect",
    "proxy-authenticate",
    "te",
}


def _target(value: str) -> str:
    m = _TARGET.match(value)
    if not m:
        raise ValueError(
            f"expected integration.request.header.<name>, integration.request.querystring.<name> or "
            f"integration.request.path.<name> (got {value!r})"
        )
    if m.group(1) == "header" and m.group(2).lower() in FORBIDDEN_MAPPED_HEADERS:
        raise ValueError(f"header {m.group(2)} cannot be mapped (API Gateway refuses it)")
    return value


def _source(value: str) -> str:
    if not _SOURCE.match(value):
        raise ValueError(
            "expected method.request.{path,querystring,multivaluequerystring,header,multivalueheader}.<name>, "
            f"method.request.body[.<JSONPath>], stageVariables.<name>, context.<var> or 'static' (got {value!r})"
        )
    return value


def _response_target(value: str) -> str:
    if not _RESPONSE_TARGET.match(value):
        raise ValueError(f"expected method.response.header.<name> (got {value!r})")
    return value


def _response_source(value: str) -> str:
    if not _RESPONSE_SOURCE.match(value):
        raise ValueError(
            "expected integration.response.{header,multivalueheader}.<name>, integration.response.body[.<JSONPath>], "
            f"stageVariables.<name>, context.<var> or 'static' (got {value!r})"
        )
    return value


Templates = dict[Annotated[str, AfterValidator(_media_type)], str]


class IntegrationResponse(PolicyModel):
    """One of API Gateway's integration responses, chosen by the backend's status code."""

    selection_pattern: Regex | None = Field(
        default=None, description="RE2 pattern matched against the whole status code; none: the default response."
    )
    status: Annotated[int, Field(ge=100, le=599)]
    response_parameters: dict[
        Annotated[str, AfterValidator(_response_target)], Annotated[str, AfterValidator(_response_source)]
    ] = Field(default_factory=dict)
    templates: Templates = Field(default_factory=dict, description="Response templates (VTL) by media type.")


# AWS services spoken over the JSON protocol: X-Amz-Target prefix per service.
AWS_JSON_TARGETS = {
    "dynamodb": "DynamoDB_20120810",
    "kinesis": "Kinesis_20131202",
    "firehose": "Firehose_20150804",
    "logs": "Logs_20140328",
    "events": "AWSEvents",
    "states": "AWSStepFunctions",
}


class AwsCredentials(PolicyModel):
    access_key_id: Secret
    secret_access_key: Secret
    session_token: Secret | None = None


class HttpIntegration(PolicyModel):
    """Where and how a route calls its backend (API Gateway's integration)."""

    type: Literal["http_proxy", "http", "mock", "aws"] = Field(
        default="http_proxy",
        description="http_proxy forwards as is; http maps with templates; mock answers from the template; "
        "aws calls an AWS service endpoint (SigV4-signed when credentials are given).",
    )
    uri: HttpUrl | None = Field(
        default=None,
        description="Target URL; may use {param} path parameters and ${stageVariables.name}. "
        "Default: the Api's upstream plus the request path (aws: the service endpoint).",
    )
    method: Literal["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY"] = "ANY"
    timeout: Annotated[Duration, Field(ge=0.05, le=MAX_TIMEOUT)] | None = None
    tls_verify: bool = True
    request_headers: dict[HeaderName, str | Secret] = Field(
        default_factory=dict,
        description="Headers set on the backend request; values may be secret references.",
    )
    request_parameters: dict[Annotated[str, AfterValidator(_target)], Annotated[str, AfterValidator(_source)]] = Field(
        default_factory=dict,
        description="integration.request.* <- method.request.* / stageVariables / context / 'static'",
    )
    request_templates: Templates = Field(default_factory=dict, description="Request templates (VTL) by Content-Type.")
    passthrough_behavior: Literal["WHEN_NO_MATCH", "WHEN_NO_TEMPLATES", "NEVER"] = "WHEN_NO_MATCH"
    responses: list[IntegrationResponse] = Field(default_factory=list)
    service: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] | None = None
    action: Annotated[str, Field(pattern=r"^[A-Za-z0-9]+$")] | None = None
    region: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "us-east-1"
    credentials: AwsCredentials | None = None

    @model_validator(mode="after")
    def _consistent(self) -> HttpIntegration:
        if self.type == "aws":
            if not self.service or not self.action:
                raise ValueError("an aws integration needs service and action (e.g. dynamodb, Scan)")
            if self.service not in AWS_JSON_TARGETS:
                raise ValueError(
                    f"service {self.service!r} is not supported; expected one of: {', '.join(AWS_JSON_TARGETS)}"
                )
            for target in self.request_parameters:
                name = target.rsplit(".", 1)[-1].lower()
                if target.startswith("integration.request.header.") and name in FORBIDDEN_MAPPED_HEADERS_AWS:
                    raise ValueError(f"header {name} cannot be mapped in an aws integration (API Gateway refuses it)")
        elif self.service or self.action or self.credentials:
            raise ValueError("service, action and credentials belong to aws integrations")
        if self.type == "http_proxy" and (self.request_templates or self.responses):
            raise ValueError("http_proxy integrations take no templates or integration responses (use type: http)")
        return self


class Route(PolicyModel):
    integration: HttpIntegration = Field(default_factory=HttpIntegration)
    request_validator: Literal["all", "params", "body"] | None = Field(
        default=None, description="What API Gateway's request validator checks: all, params or body."
    )
    request_parameters: dict[Annotated[str, AfterValidator(_param_ref)], bool] = Field(
        default_factory=dict, description="method.request.{path,querystring,header}.<name>: true when required."
    )
    request_models: dict[Annotated[str, AfterValidator(_media_type)], JsonSchemaModel] = Field(
        default_factory=dict, description="Content-Type (or $default) -> JSON Schema draft 4 model."
    )
    response_models: dict[
        Annotated[int, Field(ge=100, le=599)], dict[Annotated[str, AfterValidator(_media_type)], JsonSchemaModel]
    ] = Field(default_factory=dict, description="Method response models: status -> media type -> JSON Schema.")
    validate_responses: bool = Field(
        default=False, description="Answers that do not match their response model become 502 gateway responses."
    )
    api_key_required: bool = Field(
        default=False, description="Requests need an x-api-key of a usage plan covering this stage (kind: UsagePlans)."
    )


class ApiPolicy(PolicyModel):
    kind: Literal["Api"]
    mode: Mode | None = None
    name: str = "sidegate"
    stage: str = "$default"
    stage_variables: dict[str, str] = Field(default_factory=dict)
    upstream: HttpUrl | None = Field(
        default=None,
        description="The service beside the sidecar. Default: mitmproxy's reverse-mode target.",
    )
    timeout: Annotated[Duration, Field(ge=0.05, le=MAX_TIMEOUT)] = 29.0
    routes: dict[RouteKeyText, Route] = Field(default_factory=lambda: {"$default": Route()})

    @field_validator("stage")
    @classmethod
    def _stage_name(cls, v: str) -> str:
        if v != "$default" and not _STAGE_NAME.match(v):
            raise ValueError(f"stage names are letters, digits, - and _, up to 128 characters (got {v!r})")
        return v

    @field_validator("stage_variables")
    @classmethod
    def _stage_vars(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _STAGE_VAR_NAME.match(name):
                raise ValueError(f"stage variable names are letters, digits and _, up to 64 (got {name!r})")
            if len(value) > 512:
                raise ValueError(f"stage variable {name} is longer than 512 characters")
        return v

    @field_validator("routes")
    @classmethod
    def _distinct_routes(cls, routes: dict[str, Route]) -> dict[str, Route]:
        seen: dict[object, str] = {}
        for text in routes:
            shape = parse_route_key(text).shape
            if shape in seen:
                raise ValueError(f"duplicate route: {text!r} matches the same requests as {seen[shape]!r}")
            seen[shape] = text
        return routes

    def route_keys(self) -> list[RouteKey]:
        return [parse_route_key(k) for k in self.routes]


class GatewayResponse(PolicyModel):
    status: Annotated[int, Field(ge=100, le=599)] | None = None
    headers: dict[HeaderName, str] = Field(default_factory=dict)
    body: str | None = Field(
        default=None,
        description="Body template with $context.* and $stageVariables.* substitutions.",
    )


def _response_type(value: str) -> str:
    if value not in RESPONSE_TYPES:
        raise ValueError(f"unknown gateway response type {value!r}; expected one of: {', '.join(RESPONSE_TYPES)}")
    return value


class GatewayResponsesPolicy(PolicyModel):
    kind: Literal["GatewayResponses"]
    mode: Mode | None = None
    responses: dict[Annotated[str, AfterValidator(_response_type)], GatewayResponse]


class PluginPolicy(PolicyModel):
    """A plugin by entry point name (group ``sidegate.plugins``) or ``module:Class``."""

    kind: Literal["Plugin"]
    mode: Mode | None = None
    use: Annotated[str, Field(pattern=_PLUGIN_REF.pattern)]
    name: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)


# -- CORS (addons/cors.py) -------------------------------------------------------------------

_ORIGIN = re.compile(r"^(https?)://(\*\.)?([a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$")
DEFAULT_PORTS = {"http": 80, "https": 443}
CORS_SAFELISTED_METHODS = ("GET", "HEAD", "POST")


def normalise_origin(value: str) -> str | None:
    """``scheme://host[:port]`` lower-cased with the default port dropped; None if not an origin."""
    m = _ORIGIN.match(value.strip().lower())
    if m is None or m.group(2):
        return None
    scheme, host, port = m.group(1), m.group(3), m.group(4)
    if port is not None and int(port) != DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{int(port)}"
    return f"{scheme}://{host}"


def _origin_entry(value: str) -> str:
    if value in ("*", "null"):
        return value
    m = _ORIGIN.match(value.lower())
    if m is None:
        raise ValueError(
            f"expected an origin such as https://app.example.com or https://*.example.com, '*' or 'null' "
            f"(got {value!r}; an origin has no path)"
        )
    if m.group(4) is not None and not 0 < int(m.group(4)) < 65536:
        raise ValueError(f"invalid port in origin {value!r}")
    return value.lower()


class OriginRegex(PolicyModel):
    regex: Regex = Field(description="RE2 pattern matched against the whole origin (always anchored).")


OriginEntry = Annotated[str, AfterValidator(_origin_entry)] | OriginRegex


def _method_or_star(value: str) -> str:
    upper = value.upper()
    if upper != "*" and upper not in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        raise ValueError(f"expected an HTTP method or '*' (got {value!r})")
    return upper


def _header_or_star(value: str) -> str:
    return value if value == "*" else _header_name(value)


class CorsSettings(PolicyModel):
    """Per-route override: any field given replaces the API-wide value."""

    allow_origins: list[OriginEntry] | None = None
    allow_methods: list[Annotated[str, AfterValidator(_method_or_star)]] | None = None
    allow_headers: list[Annotated[str, AfterValidator(_header_or_star)]] | None = None
    expose_headers: list[Annotated[str, AfterValidator(_header_or_star)]] | None = None
    allow_credentials: bool | None = None
    max_age: Annotated[Duration, Field(ge=0, le=86400)] | None = None
    allow_private_network: bool | None = None


class CorsPolicy(PolicyModel):
    kind: Literal["Cors"]
    mode: Mode | None = None
    allow_origins: list[OriginEntry] = Field(min_length=1)
    allow_methods: list[Annotated[str, AfterValidator(_method_or_star)]] = Field(
        default_factory=lambda: list(CORS_SAFELISTED_METHODS)
    )
    allow_headers: list[Annotated[str, AfterValidator(_header_or_star)]] = Field(default_factory=list)
    expose_headers: list[Annotated[str, AfterValidator(_header_or_star)]] = Field(default_factory=list)
    allow_credentials: bool = False
    max_age: Annotated[Duration, Field(ge=0, le=86400)] | None = Field(
        default=None, description="Access-Control-Max-Age; omitted unless set (browsers cap it: Chromium 2 h)."
    )
    allow_private_network: bool = Field(
        default=False, description="Answer Private Network Access preflights for allowed origins."
    )
    routes: dict[RouteKeyText, CorsSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_credentials_with_any_origin(self) -> CorsPolicy:
        overrides: list[tuple[str, CorsSettings | None]] = [("", None), *self.routes.items()]
        for key, settings in overrides:
            origins = self.allow_origins
            if settings is not None and settings.allow_origins is not None:
                origins = settings.allow_origins
            credentials = self.allow_credentials
            if settings is not None and settings.allow_credentials is not None:
                credentials = settings.allow_credentials
            if credentials and "*" in origins:
                where = f" (route {key})" if key else ""
                raise ValueError(
                    f"allow_credentials: true cannot be combined with allow_origins '*'{where}: browsers "
                    "refuse it; list the origins"
                )
        return self


# -- origin secret header (addons/origin_verify.py) -------------------------------------------


class OriginVerifyPolicy(PolicyModel):
    kind: Literal["OriginVerify"]
    mode: Mode | None = None
    header: HeaderName = "x-origin-verify"
    secrets: list[Secret] = Field(
        min_length=1, description="Accepted secrets, current first, then the one being retired."
    )
    exempt_routes: list[RouteKeyText] = Field(default_factory=list)
    allow_preflight: bool = Field(
        default=False, description="CORS preflights come straight from browsers, without the CDN's header."
    )


# -- throttles (addons/throttle/) -------------------------------------------------------------

_CLIENT_KEY = re.compile(r"^(ip|client_cert_subject|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$")


def _client_key(value: str) -> str:
    if not _CLIENT_KEY.match(value):
        raise ValueError(f"expected ip, client_cert_subject or header:<name> (got {value!r})")
    return value.lower()


def _cidr(value: Any) -> Any:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ValueError(f"invalid IP network {value!r}") from None


Cidr = Annotated[Any, BeforeValidator(_cidr), WithJsonSchema({"type": "string", "description": "IPv4/IPv6 CIDR"})]


class RateLimit(PolicyModel):
    """A token bucket: ``rate`` requests per second refill, ``burst`` capacity."""

    rate: Annotated[float, Field(gt=0, le=1_000_000)]
    # Refill is continuous, so a burst below the rate still sustains the rate (API Gateway's own
    # account default is 10,000/s with a burst of 5,000); a bucket must hold at least one token.
    burst: Annotated[int, Field(ge=1, le=10_000_000)]
    mode: Mode | None = None
    key: list[Annotated[str, AfterValidator(_client_key)]] = Field(
        default_factory=list,
        description="Per-client buckets keyed by ip, header:<name>, client_cert_subject, or a composite.",
    )


def _store_url(value: str) -> str:
    if value == "memory":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"expected memory or a redis:// / rediss:// URL (got {value!r})")
    if parts.password:
        raise ValueError("put the Redis password in `password: {secret_env: ...}`, not in the URL")
    return value


class ThrottlePolicy(PolicyModel):
    kind: Literal["Throttle"]
    mode: Mode | None = None
    store: Annotated[str, AfterValidator(_store_url)] = Field(
        default="memory", description="memory (this process) or redis://host:port/db, rediss:// for TLS."
    )
    password: Secret | None = None
    # 250 ms: a saturated sidecar's own event loop delays Redis answers by tens of milliseconds
    # (the benchmark saw half the decisions time out at 50 ms under load); a Redis that is really
    # away is still noticed within a quarter second, and the circuit breaker then skips it.
    store_timeout: Annotated[Duration, Field(ge=0.001, le=5)] = 0.25
    on_store_error: Literal["allow", "deny", "local"] = Field(
        default="allow",
        description="When Redis is away: allow (pass), deny (503), or local (per-instance buckets at rate/replicas).",
    )
    replicas: Annotated[int, Field(ge=1, le=10_000)] = 1
    max_buckets: Annotated[int, Field(ge=100, le=100_000_000)] = Field(
        default=100_000,
        description="Per-client buckets kept in memory; beyond it the least recently used goes (comes back full).",
    )
    account: RateLimit = Field(
        default_factory=lambda: RateLimit(rate=10_000, burst=5_000),
        description="API Gateway's account tier: 10,000 requests/s, burst 5,000.",
    )
    stage: RateLimit | None = None
    routes: dict[RouteKeyText, RateLimit] = Field(default_factory=dict)
    trusted_proxies: list[Cidr] = Field(
        default_factory=list, description="Peers whose X-Forwarded-For is believed (per-client ip keys)."
    )
    rate_limit_headers: bool = Field(default=True, description="RateLimit-Policy / RateLimit on 429 answers.")
    rate_limit_headers_on_success: bool = False


# -- API keys, usage plans, quotas (addons/throttle/plans.py) ------------------------------------

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KEY_VALUE = re.compile(r"^[A-Za-z0-9]{20,128}$")


class HashedKey(PolicyModel):
    sha256: str = Field(description="Hex SHA-256 of the key value: the key itself never sits in a file.")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _SHA256.match(v.lower()):
            raise ValueError("expected 64 hexadecimal characters")
        return v.lower()


def _key_secret(value: Secret) -> Secret:
    # API Gateway's rule for key values; the message never shows the value.
    if not _KEY_VALUE.match(value.reveal()):
        raise ValueError(f"API key from {value.origin} must be 20 to 128 letters and digits")
    return value


class ApiKey(PolicyModel):
    value: Annotated[Secret, AfterValidator(_key_secret)] | HashedKey
    plan: str
    enabled: bool = True


class Quota(PolicyModel):
    limit: Annotated[int, Field(ge=0)]
    period: Literal["DAY", "WEEK", "MONTH"]
    offset: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Requests subtracted from the limit in the key's first period."
    )

    @model_validator(mode="after")
    def _offset_within_limit(self) -> Quota:
        if self.offset > self.limit:
            raise ValueError(f"offset ({self.offset}) cannot exceed limit ({self.limit})")
        return self


class UsagePlan(PolicyModel):
    stages: list[str] = Field(default_factory=lambda: ["*"], description="Stages the plan covers; * for all.")
    throttle: RateLimit | None = None
    routes: dict[RouteKeyText, RateLimit] = Field(default_factory=dict, description="Per-route throttles for keys.")
    quota: Quota | None = None


class UsagePlansPolicy(PolicyModel):
    kind: Literal["UsagePlans"]
    mode: Mode | None = None
    header: HeaderName = "x-api-key"
    quota_file: str = Field(
        default=".sidegate/quotas.sqlite",
        description="SQLite file for quota counters (relative to the policy directory's parent).",
    )
    plans: dict[str, UsagePlan] = Field(min_length=1)
    keys: dict[str, ApiKey] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys_name_plans(self) -> UsagePlansPolicy:
        for key_id, key in self.keys.items():
            if key.plan not in self.plans:
                raise ValueError(f"key {key_id!r} names plan {key.plan!r}, which is not declared")
        return self


from addons.mtls.models import ClientTlsPolicy  # noqa: E402 (their own modules: the largest kinds)
from addons.waf.models import WebAclPolicy  # noqa: E402

KINDS: dict[str, type[PolicyModel]] = {
    "Api": ApiPolicy,
    "GatewayResponses": GatewayResponsesPolicy,
    "Plugin": PluginPolicy,
    "Cors": CorsPolicy,
    "OriginVerify": OriginVerifyPolicy,
    "Throttle": ThrottlePolicy,
    "UsagePlans": UsagePlansPolicy,
    "ClientTls": ClientTlsPolicy,
    "WebAcl": WebAclPolicy,
}
