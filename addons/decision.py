"""Decisions plugins return, and the per-flow exchange they read and write.

A plugin method returns ``None`` (continue), a :class:`Reject` (refuse with a gateway response),
an :class:`Answer` (the gateway answers itself and the request goes no further, as a CORS
preflight does) or a :class:`Flag` (a finding that changes nothing here but is traced and
counted). The checkpoint runner owns guarding, fail-closed handling, tracing and applying;
plugins never set ``flow.response`` themselves.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mitmproxy import http

    from addons.policy.policyset import PolicySet
    from addons.routing import RouteMatch

METADATA_KEY = "sidegate"
_EMPTY = object()  # an empty body: each caller says what that means to it


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the request (or replace the answer) with a gateway response."""

    response_type: str  # API Gateway's gateway response type: "THROTTLED", "WAF_FILTERED", ...
    status: int | None = None  # None: the response type's status
    reason: str = "rejected"  # stable snake_case code, never request data
    rule: str | None = None  # "waf/sqli-001"
    source: str | None = None  # "policies/waf.yaml:14"
    headers: tuple[tuple[str, str], ...] = ()  # e.g. Retry-After
    message: str | None = None  # overrides the type's default $context.error.message
    # In report-only mode the request passes; a plugin whose "pass" is itself a gateway answer
    # (a CORS preflight) says here what that answer is.
    report_answer: Answer | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The gateway answers the request itself; not a refusal (e.g. an allowed CORS preflight)."""

    status: int
    reason: str  # stable snake_case code: "cors_preflight"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Flag:
    """A finding that does not change the outcome here (e.g. CORS headers withheld)."""

    reason: str
    rule: str | None = None
    report_only: bool = False  # a would-be refusal of a report-mode part of an enforced plugin


@dataclass(slots=True)
class Exchange:
    """Everything sidegate knows about one request/response pair.

    It lives beside the flow (never in ``flow.metadata``, which must stay plain data) and pins
    the policy set the request started with, so a hot reload never changes a flow midway.
    """

    flow: http.HTTPFlow
    policy: PolicySet
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.time)
    _route: RouteMatch | None = None
    _routed: bool = False
    rejection: Reject | None = None  # the enforced rejection that produced flow.response
    rejected_by: str | None = None  # plugin name of that rejection
    answered_by: str | None = None  # plugin whose Answer produced flow.response
    gateway_answer: bool = False  # flow.response was made by the gateway, not the backend
    report_only: list[tuple[str, Reject | Flag]] = field(default_factory=list)
    flags: list[tuple[str, Flag]] = field(default_factory=list)  # enforced findings
    checkpoint_us: dict[str, int] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)  # plugin scratch space, per request
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    # request headers whose value is replaced before the flow is recorded (API keys)
    redact_headers: dict[str, str] = field(default_factory=dict)  # plugin -> plain data for its trace entry
    finished: bool = False

    @property
    def request(self) -> http.Request:
        return self.flow.request

    @property
    def response(self) -> http.Response | None:
        return self.flow.response

    @property
    def path(self) -> str:
        """The request path without the query string."""
        return self.flow.request.path.split("?", 1)[0]

    @property
    def route(self) -> RouteMatch | None:
        """The matched route (API Gateway's precedence), matched once on first use."""
        if not self._routed:
            self._route = self.policy.router.match(self.flow.request.method, self.path)
            self._routed = True
        return self._route

    def route_for(self, method: str) -> RouteMatch | None:
        """The route the same path would take with another method (a preflight's real method)."""
        return self.policy.router.match(method, self.path)

    @property
    def path_params(self) -> dict[str, str]:
        return dict(self.route.params) if self.route else {}

    @property
    def stage_variables(self) -> dict[str, str]:
        return self.policy.api.stage_variables

    def json_body(self, empty: Any = None) -> tuple[bool, Any]:
        """The request body parsed as JSON once per request and shared by every plugin:
        (True, value), or (False, None) when it is not JSON. An empty body gives ``empty``."""
        cached = self.vars.get("_json_body")
        if cached is None:
            raw = self.flow.request.get_content(strict=False) or b""
            if not raw.strip():
                cached = (True, _EMPTY)
            else:
                try:
                    cached = (True, json.loads(raw))
                except (ValueError, UnicodeDecodeError):
                    cached = (False, None)
            self.vars["_json_body"] = cached
        ok, value = cached
        return ok, (empty if value is _EMPTY else value)

    @property
    def decided(self) -> bool:
        return self.flow.response is not None or self.rejection is not None
