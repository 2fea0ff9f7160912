"""Plugins used by the tests through `kind: Plugin` (`use: sample_plugins:Class`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from addons.decision import Exchange, Reject


class DenyHeader:
    """Rejects requests carrying a configured header (403 ACCESS_DENIED)."""

    name = "deny_header"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.header = str(config["header"])

    def method_request(self, ex: Exchange) -> Reject | None:
        if self.header in ex.request.headers:
            return Reject("ACCESS_DENIED", reason="denied_header", rule="test/deny-header")
        return None


class Boom:
    """Raises at a configured checkpoint, to prove the runner fails closed."""

    name = "boom"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.fail_open = bool(config.get("fail_open", False))

    def method_request(self, ex: Exchange) -> Reject | None:
        if "x-boom" in ex.request.headers:
            raise RuntimeError("boom")
        return None


class Stamp:
    """Async plugin at every later checkpoint: stamps headers so tests see the order."""

    name = "stamp"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.calls: list[str] = []

    async def integration_request(self, ex: Exchange) -> Reject | None:
        ex.request.headers["x-stamped"] = "integration_request"
        return None

    def integration_response(self, ex: Exchange) -> Reject | None:
        assert ex.response is not None
        ex.response.headers["x-integration-response"] = "seen"
        return None

    def method_response(self, ex: Exchange) -> Reject | None:
        assert ex.response is not None
        ex.response.headers["x-method-response"] = str(ex.response.status_code)
        return None


class RejectPath:
    """Answers a configured path with a configured gateway response type (e.g. THROTTLED)."""

    name = "reject_path"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.path = str(config["path"])
        self.response_type = str(config["type"])

    def method_request(self, ex: Exchange) -> Reject | None:
        if ex.path == self.path:
            return Reject(self.response_type, reason="test_rejection")
        return None


class NotAPlugin:
    def __init__(self, config: Mapping[str, Any]) -> None:
        pass


class DeleteOnly:
    """Runs at the method request only for DELETE requests (``method_request_only_for``)."""

    name = "delete_only"
    method_request_only_for = ("DELETE",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        pass

    def method_request(self, ex: Exchange) -> Reject | None:
        return Reject("ACCESS_DENIED", reason="delete_refused", rule="test/delete-only")
