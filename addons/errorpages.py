"""mitmproxy's own error answers, turned into gateway responses. Checkpoint: method response.

mitmproxy answers some failures itself and skips the ``response`` hook: a request body above
``body_size_limit`` (413), an invalid request (400). Its page is HTML saying "mitmproxy". The
``error`` hook sees the flow first: there sidegate renders the gateway response, runs the method
response checkpoint over it, and stashes it for the client connection; the HTTP/1 server layer,
wrapped once here, sends the stash instead of mitmproxy's page. Errors that arrive without a
flow (an unparsable request line) get a plain gateway body without flow context.

The wrap is the narrowest point that sees both the client connection and the error event; it
is installed idempotently and checked by the end-to-end tests against the pinned mitmproxy.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Generator
from typing import Any

from mitmproxy import http
from mitmproxy.net.http import http1, status_codes
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import ResponseProtocolError

from addons.decision import Reject
from addons.gateway_responses import ERROR_TYPE_HEADER, RESPONSE_TYPES

_MAX_PENDING_PER_CONN = 8
_pending: dict[str, deque[bytes]] = {}
_installed = False


class ErrorPages:
    def install(self) -> None:
        global _installed
        if _installed:
            return
        original_send = _http1.Http1Server.send

        def send(self: _http1.Http1Server, event: Any) -> Generator[Any, Any, None]:
            if isinstance(event, ResponseProtocolError):
                queue = _pending.get(self.conn.id)
                raw = queue.popleft() if queue else None
                if queue is not None and not queue:
                    _pending.pop(self.conn.id, None)
                if raw is not None and self.response is None and event.code.http_status_code() is not None:
                    from mitmproxy.proxy import commands

                    yield commands.SendData(self.conn, raw)
                    yield commands.CloseConnection(self.conn)
                    return
            yield from original_send(self, event)

        _http1.Http1Server.send = send  # type: ignore[method-assign]
        _http1.make_error_response = _plain_error_response
        _installed = True

    @staticmethod
    def rejection_for(message: str) -> Reject | None:
        """The gateway response for a mitmproxy error message, or None (client went away, ...)."""
        if "body_size_limit" in message and message.startswith("Request"):
            return Reject("REQUEST_TOO_LARGE", reason="body_too_large")
        if "refusing to prevent request smuggling" in message or message.startswith("Invalid"):
            return Reject("BAD_REQUEST", reason="invalid_request")
        return None

    @staticmethod
    def stash(flow: http.HTTPFlow, response: http.Response) -> None:
        response.headers["connection"] = "close"
        queue = _pending.setdefault(flow.client_conn.id, deque(maxlen=_MAX_PENDING_PER_CONN))
        queue.append(bytes(http1.assemble_response(response)))

    @staticmethod
    def forget(conn_id: str) -> None:
        _pending.pop(conn_id, None)


def _plain_error_response(status_code: int, message: str = "") -> bytes:
    """Replacement for mitmproxy's HTML error page where no flow exists (unparsable requests)."""
    default = RESPONSE_TYPES.get({413: "REQUEST_TOO_LARGE", 504: "INTEGRATION_TIMEOUT"}.get(status_code, ""))
    text = default.message if default else status_codes.RESPONSES.get(status_code, "Error")
    resp = http.Response.make(
        status_code,
        json.dumps({"message": text}).encode(),
        {"content-type": "application/json", "connection": "close"},
    )
    if default and default.error_type:
        resp.headers[ERROR_TYPE_HEADER] = default.error_type
    return bytes(http1.assemble_response(resp))
