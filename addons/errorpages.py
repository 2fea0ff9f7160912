"""mitmproxy's own error answers, turned into gateway responses. Checkpoint: method response.

mitmproxy answers some failures itself and skips the ``response`` hook: a request body above
``body_size_limit`` (413), an invalid request (400). Its page is HTML saying "mitmproxy". The
``error`` hook sees the flow first: there sidegate renders the gateway response, runs the method
response checkpoint over it, and stashes it for the client connection; the HTTP/1 and HTTP/2
server layers, wrapped once here, send the stash instead of mitmproxy's page (HTTP/3 is not
wrapped). Errors that arrive without a flow (an unparsable HTTP/1 request) get a plain gateway
body without flow context.

The wraps sit at the narrowest point that sees both the client connection and the error event
(each connection's layer events are processed in order, so the stash and the send pair up); they
are installed once and checked by the end-to-end tests against the pinned mitmproxy 12.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Generator
from typing import Any

from mitmproxy import http
from mitmproxy.net.http import http1, status_codes
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import _http1, _http2
from mitmproxy.proxy.layers.http._events import ResponseProtocolError

from addons.decision import Reject
from addons.gateway_responses import ERROR_TYPE_HEADER, RESPONSE_TYPES

_MAX_PENDING_PER_CONN = 8
_pending: dict[str, deque[http.Response]] = {}
_H2_CONNECTION_HEADERS = frozenset([b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"])
_installed = False


def _take(conn_id: str) -> http.Response | None:
    queue = _pending.get(conn_id)
    if not queue:
        return None
    response = queue.popleft()
    if not queue:
        _pending.pop(conn_id, None)
    return response


def _h1_send(original: Any) -> Any:
    def send(self: _http1.Http1Server, event: Any) -> Generator[Any, Any, None]:
        if isinstance(event, ResponseProtocolError):
            response = _take(self.conn.id)
            if response is not None and self.response is None and event.code.http_status_code() is not None:
                yield commands.SendData(self.conn, bytes(http1.assemble_response(response)))
                yield commands.CloseConnection(self.conn)
                return
        yield from original(self, event)

    return send


def _h2_handle_event(original: Any) -> Any:
    def handle(self: _http2.Http2Server, event: Any) -> Generator[Any, Any, None]:
        if isinstance(event, ResponseProtocolError):
            response = _take(self.conn.id)
            sid = event.stream_id
            if (
                response is not None
                and event.code.http_status_code() is not None
                and not self.is_closed(sid)
                and self.is_open_for_us(sid)
                and not self.h2_conn.streams[sid].state_machine.headers_sent
            ):
                headers = [(b":status", str(response.status_code).encode())]
                headers += [
                    (k.lower(), v) for k, v in response.headers.fields if k.lower() not in _H2_CONNECTION_HEADERS
                ]
                self.h2_conn.send_headers(sid, headers)
                self.h2_conn.send_data(sid, response.content or b"", end_stream=True)
                yield commands.SendData(self.conn, self.h2_conn.data_to_send())
                return
        yield from original(self, event)

    return handle


class ErrorPages:
    def install(self) -> None:
        global _installed
        if _installed:
            return
        _http1.Http1Server.send = _h1_send(_http1.Http1Server.send)  # type: ignore[method-assign]
        _http2.Http2Server._handle_event = _h2_handle_event(_http2.Http2Server._handle_event)  # type: ignore[method-assign]
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
        """Keep the answer for the server layer that is about to send mitmproxy's error page."""
        response.headers["connection"] = "close"  # HTTP/1: mitmproxy closes after its error anyway
        queue = _pending.setdefault(flow.client_conn.id, deque(maxlen=_MAX_PENDING_PER_CONN))
        queue.append(response.copy())

    @staticmethod
    def forget(conn_id: str) -> None:
        _pending.pop(conn_id, None)


def _plain_error_response(status_code: int, message: str = "") -> bytes:
    """Replacement for mitmproxy's HTML error page where no flow exists (unparsable requests)."""
    default = RESPONSE_TYPES.get(
        {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 504: "INTEGRATION_TIMEOUT"}.get(status_code, "")
    )
    text = default.message if default else status_codes.RESPONSES.get(status_code, "Error")
    resp = http.Response.make(
        status_code,
        json.dumps({"message": text}, separators=(",", ":")).encode(),  # as the gateway responses
        # No flow exists, so no configured header name either: API Gateway's own.
        {"content-type": "application/json", "connection": "close", "x-amzn-RequestId": str(uuid.uuid4())},
    )
    if default and default.error_type:
        resp.headers[ERROR_TYPE_HEADER] = default.error_type
    return bytes(http1.assemble_response(resp))
