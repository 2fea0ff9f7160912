"""The backend call: API Gateway's HTTP_PROXY integration. Checkpoint: integration request.

sidegate calls the backend itself (aiohttp, one pooled session per event loop) instead of letting
mitmproxy forward the request, because API Gateway's integration semantics need it: a per-route
timeout answered with 504 ``Endpoint request timed out``, a refused or broken backend answered
with a 502 gateway response (never mitmproxy's HTML error page), a target URL built from path
parameters and stage variables, and a bounded response size. mitmproxy still owns the client
side (TLS, HTTP/1 and HTTP/2, flows in mitmweb); the answer is set as ``flow.response`` so the
integration response and method response checkpoints see it as usual.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import aiohttp
from mitmproxy import http
from multidict import CIMultiDict
from yarl import URL

from addons.decision import Exchange, Reject
from addons.lifecycle import INTEGRATION_REQUEST, apply_rejection, trace_entry
from addons.mapping import BACKEND_REQUEST, BackendRequest
from addons.policy.models import AWS_JSON_TARGETS, HttpIntegration
from addons.policy.types import Secret
from addons.routing import GREEDY, parse_route_key

if TYPE_CHECKING:
    from addons.gateway import Sidegate

log = logging.getLogger("sidegate")

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the client layer recomputes; never forwarded.
HOP_BY_HOP = frozenset(
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
     "proxy-authenticate", "proxy-authorization", "host", "content-length", "expect"]
)  # fmt: skip
_RESPONSE_DROP_HEAD = frozenset([b"connection", b"keep-alive", b"transfer-encoding"])
_RESPONSE_DROP = _RESPONSE_DROP_HEAD | {b"content-length"}
_STAGE_VAR = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_]+)\}")
_PATH_PARAM = re.compile(r"\{([A-Za-z0-9._-]+)\+?\}")
DEFAULT_MAX_RESPONSE = 10 * 1024 * 1024  # API Gateway's integration payload limit


class Integrations:
    def __init__(self, gate: Sidegate) -> None:
        self.gate = gate
        self._session: aiohttp.ClientSession | None = None
        self.max_response_body = DEFAULT_MAX_RESPONSE

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=512, ttl_dns_cache=300, keepalive_timeout=30)
            # auto_decompress=False: the backend's encoding reaches the client untouched.
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def target_url(self, ex: Exchange, integration: HttpIntegration, prepared: BackendRequest | None = None) -> str:
        req = ex.request
        raw_path = req.path  # includes the query string
        if prepared is not None:  # non-proxy: the query string is what the mapping produced
            query_string = urlencode(prepared.query)
            raw_path = ex.path + (f"?{query_string}" if query_string else "")
        if integration.type == "aws" and integration.uri is None:
            return f"https://{integration.service}.{integration.region}.amazonaws.com/"
        if integration.uri is None:
            base = ex.policy.api.upstream or self.gate.default_upstream
            if base is None:
                raise LookupError("no upstream: set Api.upstream or run mitmproxy in reverse mode")
            return base.rstrip("/") + raw_path
        greedy = set()
        if ex.route is not None and ex.route.key != "$default":
            greedy = {n for k, n in parse_route_key(ex.route.key).segments if k == GREEDY}
        params = prepared.path_params if prepared is not None else ex.vars.get("mapped_path_params", ex.path_params)
        stage_vars = ex.stage_variables

        def param(m: re.Match[str]) -> str:
            name = m.group(1)
            return quote(params.get(name, ""), safe="/" if name in greedy else "")

        url = _STAGE_VAR.sub(lambda m: stage_vars.get(m.group(1), ""), integration.uri)
        url = _PATH_PARAM.sub(param, url)
        query = raw_path.partition("?")[2]
        if query and "?" not in url:
            url += "?" + query
        return url

    async def call(self, ex: Exchange) -> None:
        api = ex.policy.api
        integration = api.routes[ex.route.key].integration if ex.route and ex.route.key in api.routes else None
        integration = integration or HttpIntegration()
        timeout = integration.timeout or api.timeout
        start = time.perf_counter_ns()
        reject: Reject | None = None
        status: int | None = None
        prepared: BackendRequest | None = ex.vars.get(BACKEND_REQUEST)
        try:
            if prepared is not None and prepared.mock_status is not None:
                response = http.Response.make(prepared.mock_status, b"", {"content-type": "application/json"})
            else:
                url = self.target_url(ex, integration, prepared)
                response = await self._send(ex, integration, url, timeout, prepared)
            status = response.status_code
            ex.flow.response = response
        except TimeoutError:
            reject = Reject("INTEGRATION_TIMEOUT", reason="integration_timeout", source=api_source(ex))
        except aiohttp.ClientConnectorError as e:
            log.warning("sidegate: backend unreachable (request %s): %s", ex.request_id, e.strerror or type(e).__name__)
            reject = Reject("INTEGRATION_FAILURE", reason="backend_unreachable", source=api_source(ex))
        except ResponseTooLarge:
            reject = Reject("INTEGRATION_FAILURE", reason="backend_response_too_large", source=api_source(ex))
        except (aiohttp.ClientError, ValueError, LookupError) as e:
            log.warning("sidegate: backend call failed (request %s): %s", ex.request_id, type(e).__name__)
            reject = Reject("INTEGRATION_FAILURE", reason="backend_error", source=api_source(ex))
        us = (time.perf_counter_ns() - start) // 1000
        ex.vars["integration_us"] = us
        if reject is None:
            ex.trace.append(trace_entry(INTEGRATION_REQUEST, "integration", "continue", us, status=status))
            return
        ex.trace.append(trace_entry(INTEGRATION_REQUEST, "integration", "reject", us, reject=reject))
        self.gate.metrics.rejection("integration", reject.reason, True)
        apply_rejection(self.gate, ex, "integration", reject)

    async def _send(
        self, ex: Exchange, integration: HttpIntegration, url: str, timeout: float, prepared: BackendRequest | None
    ) -> http.Response:
        req = ex.request
        headers: CIMultiDict[str] = CIMultiDict()
        if prepared is None:  # http_proxy: the client's request, minus hop-by-hop headers
            for name, value in req.headers.fields:
                lname = name.decode("latin-1").lower()
                if lname not in HOP_BY_HOP:
                    headers.add(name.decode("latin-1"), value.decode("latin-1"))
            peer = ex.flow.client_conn.peername[0] if ex.flow.client_conn.peername else None
            if peer:
                prior = headers.get("x-forwarded-for")
                headers["x-forwarded-for"] = f"{prior}, {peer}" if prior else peer
            headers["x-forwarded-proto"] = "https" if ex.flow.client_conn.tls_established else "http"
            method = req.method if integration.method == "ANY" else integration.method
            body = req.raw_content or None
        else:  # http, aws: only what the integration request mapped
            for mapped_name, mapped_value in prepared.headers:
                headers[mapped_name] = mapped_value
            method = prepared.method
            body = prepared.body or None
        for header, configured in integration.request_headers.items():
            headers[header] = configured.reveal() if isinstance(configured, Secret) else configured
        if integration.type == "aws":
            assert integration.service is not None and integration.action is not None
            headers["x-amz-target"] = f"{AWS_JSON_TARGETS[integration.service]}.{integration.action}"
            headers.setdefault("content-type", "application/x-amz-json-1.0")
            if integration.credentials is not None:
                sign_aws(headers, method, url, body or b"", integration)
        async with asyncio.timeout(timeout):
            async with self._client().request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                ssl=True if integration.tls_verify else False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                compress=None,
            ) as resp:
                if resp.content_length is not None and resp.content_length > self.max_response_body:
                    raise ResponseTooLarge()
                content = await resp.content.read(self.max_response_body + 1)
                if len(content) > self.max_response_body:
                    raise ResponseTooLarge()
                # A HEAD answer's Content-Length describes the GET body: keep it as sent.
                drop = _RESPONSE_DROP_HEAD if method == "HEAD" else _RESPONSE_DROP
                fields = [(k, v) for k, v in resp.raw_headers if k.lower() not in drop]
        if method != "HEAD":
            fields.append((b"content-length", str(len(content)).encode()))
        return http.Response(
            http_version=b"HTTP/1.1",
            status_code=resp.status,
            reason=(resp.reason or "").encode("latin-1", "replace"),
            headers=http.Headers(fields),
            content=content,
            trailers=None,
            timestamp_start=time.time(),
            timestamp_end=time.time(),
        )


def sign_aws(headers: CIMultiDict[str], method: str, url: str, body: bytes, integration: HttpIntegration) -> None:
    """SigV4 with botocore's signer, as API Gateway signs AWS integrations with its role."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = integration.credentials
    assert creds is not None and integration.service is not None
    credentials = Credentials(
        creds.access_key_id.reveal(),
        creds.secret_access_key.reveal(),
        creds.session_token.reveal() if creds.session_token else None,
    )
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    SigV4Auth(credentials, integration.service, integration.region).add_auth(request)
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
        if name in request.headers:
            headers[name] = request.headers[name]


class ResponseTooLarge(Exception):
    pass


def api_source(ex: Exchange) -> str | None:
    return ex.policy.api_source
