"""Route matching. Checkpoint: method request. Policy: ``kind: Api`` (``routes``).

The route itself is matched once per request by the exchange (``ex.route``, compiled router of
the policy set); this plugin is where a miss becomes API Gateway's answer: 403
``{"message":"Missing Authentication Token"}`` with ``x-amzn-ErrorType:
MissingAuthenticationTokenException`` (MISSING_AUTHENTICATION_TOKEN).
"""

from __future__ import annotations

from addons.decision import Exchange, Reject


class RouterPlugin:
    name = "router"

    def __init__(self, source: str) -> None:
        self.source = source

    def method_request(self, ex: Exchange) -> Reject | None:
        if ex.route is None:
            return Reject("MISSING_AUTHENTICATION_TOKEN", reason="no_route", source=self.source)
        return None
