"""Route matching. Checkpoint: method request. Policy: ``kind: Api`` (``routes``).

No matching route answers as API Gateway does: 403 ``{"message":"Missing Authentication Token"}``
with ``x-amzn-ErrorType: MissingAuthenticationTokenException`` (MISSING_AUTHENTICATION_TOKEN).
"""

from __future__ import annotations

from addons.decision import Exchange, Reject
from addons.policy.models import ApiPolicy
from addons.routing import Router


class RouterPlugin:
    name = "router"

    def __init__(self, api: ApiPolicy, source: str) -> None:
        self.source = source
        self._router = Router(api.route_keys())

    def method_request(self, ex: Exchange) -> Reject | None:
        ex.route = self._router.match(ex.request.method, ex.path)
        if ex.route is None:
            return Reject("MISSING_AUTHENTICATION_TOKEN", reason="no_route", source=self.source)
        return None
