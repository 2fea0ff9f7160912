"""Decisions plugins return, and the per-flow exchange they read and write.

A plugin method returns ``None`` (continue) or a :class:`Reject`. The checkpoint runner owns
guarding, fail-closed handling, tracing and applying; plugins never touch ``flow.response``
for a rejection themselves.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mitmproxy import http

    from addons.policy.policyset import PolicySet
    from addons.routing import RouteMatch

METADATA_KEY = "sidegate"


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
    route: RouteMatch | None = None
    rejection: Reject | None = None  # the enforced rejection that produced flow.response
    rejected_by: str | None = None  # plugin name of that rejection
    gateway_answer: bool = False  # flow.response was made by the gateway, not the backend
    report_only: list[tuple[str, Reject]] = field(default_factory=list)
    checkpoint_us: dict[str, int] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)  # plugin scratch space, per request
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
    def path_params(self) -> dict[str, str]:
        return dict(self.route.params) if self.route else {}

    @property
    def stage_variables(self) -> dict[str, str]:
        return self.policy.api.stage_variables

    @property
    def decided(self) -> bool:
        return self.flow.response is not None or self.rejection is not None
