"""Policy kinds delivered by the pipeline: ``Api``, ``GatewayResponses`` and ``Plugin``.

Later concerns add their kinds to ``KINDS`` (in their own modules); the loader validates every
document against the model its ``kind`` names.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator

from addons.gateway_responses import RESPONSE_TYPES
from addons.policy.types import Duration, HttpUrl, Mode, PolicyModel, Secret
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


class HttpIntegration(PolicyModel):
    """Where a route sends the request (API Gateway's HTTP / HTTP_PROXY integration)."""

    type: Literal["http_proxy"] = "http_proxy"
    uri: HttpUrl | None = Field(
        default=None,
        description="Target URL; may use {param} path parameters and ${stageVariables.name}. "
        "Default: the Api's upstream plus the request path.",
    )
    method: Literal["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY"] = "ANY"
    timeout: Annotated[Duration, Field(ge=0.05, le=MAX_TIMEOUT)] | None = None
    tls_verify: bool = True
    request_headers: dict[HeaderName, str | Secret] = Field(
        default_factory=dict,
        description="Headers set on the backend request; values may be secret references.",
    )


class Route(PolicyModel):
    integration: HttpIntegration = Field(default_factory=HttpIntegration)


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


KINDS: dict[str, type[PolicyModel]] = {
    "Api": ApiPolicy,
    "GatewayResponses": GatewayResponsesPolicy,
    "Plugin": PluginPolicy,
}
