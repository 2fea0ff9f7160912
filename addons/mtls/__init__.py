"""Mutual TLS (``kind: ClientTls``, ``policies/mtls.yaml``).

Checkpoints: connection (mitmproxy's ``tls_start_client``, ``tls_established_client``,
``tls_failed_client``, delegated here by the top-level addon), method request (plain HTTP on the
TLS listener refused, forged identity headers removed) and integration request (the verified
identity forwarded as ``x-forwarded-client-cert``).

Client certificates are verified by OpenSSL inside the handshake, with this policy's own
``SSL.Context`` per host name (see ``context.py``): a client whose certificate does not verify
never gets a connection, so no request of it reaches any plugin or the backend. Failures are
explained: a structured log line (OpenSSL's verification error, the certificate's subject,
issuer, serial and SHA-256 fingerprint) in mitmproxy's event log, and a reason code for metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from mitmproxy import ctx, http, tls
from mitmproxy.addons.tlsconfig import AppData
from mitmproxy.connection import Client
from mitmproxy.proxy.layers import modes
from OpenSSL import SSL

from addons.decision import Exchange, Reject
from addons.mtls.context import (
    Verification,
    connection_data,
    reason_for,
    server_context,
    verification_of,
    verify_error_string,
)
from addons.mtls.identity import ClientIdentity, escape_uri
from addons.mtls.models import ClientTlsPolicy, HostSettings

__all__ = [
    "ClientIdentity",
    "ClientTls",
    "ClientTlsPolicy",
    "FailureReport",
    "client_cert_context",
    "client_identity",
    "connection_state",
]

log = logging.getLogger("sidegate")

PLUGIN_NAME = "client_tls"
PLAIN_HTTP_MESSAGE = "The plain HTTP request was sent to HTTPS port"  # nginx's words for the same refusal
_STATE_ATTR = "_sidegate_client_tls"  # on mitmproxy's Client: the connection's verdict, across reloads
_MAX_ERROR_TEXT = 300

type FailureReport = dict[str, Any]


@dataclass
class ConnectionState:
    """What the handshake decided for one client connection. Outlives policy reloads."""

    host: str | None
    fingerprint: bytes
    identity: ClientIdentity | None  # only a certificate that verified
    failure: FailureReport | None = None  # report mode: why enforce mode would have refused
    summary: dict[str, Any] | None = None
    _xfcc: dict[tuple[bool, bool], str] = field(default_factory=dict)

    def xfcc(self, *, cert: bool, chain: bool) -> str | None:
        """The header value, built once per connection (not per request)."""
        if self.identity is None:
            return None
        key = (cert, chain)
        if key not in self._xfcc:
            self._xfcc[key] = self.identity.xfcc(cert=cert, chain=chain)
        return self._xfcc[key]


@dataclass(frozen=True)
class _Host:
    settings: HostSettings
    context: SSL.Context
    fingerprint: bytes

    @property
    def mode(self) -> str:
        return self.settings.client_certificates


def connection_state(client: Client) -> ConnectionState | None:
    state = getattr(client, _STATE_ATTR, None)
    return state if isinstance(state, ConnectionState) else None


def client_identity(flow: http.HTTPFlow | Exchange) -> ClientIdentity | None:
    """The verified client certificate of the flow's connection, for any plugin (throttle keys, WAF)."""
    client = flow.flow.client_conn if isinstance(flow, Exchange) else flow.client_conn
    state = connection_state(client)
    return state.identity if state is not None else None


def client_cert_context(flow: http.HTTPFlow | Exchange) -> dict[str, object] | None:
    """``$context.identity.clientCert`` of mapping templates (API Gateway's shape), or None."""
    identity = client_identity(flow)
    return identity.client_cert() if identity is not None else None


def _http2_enabled() -> bool:
    try:
        return bool(ctx.options.http2)
    except AttributeError:  # no running master (unit tests)
        return True


def _keeps_host_header() -> bool:
    try:
        return bool(ctx.options.keep_host_header)
    except AttributeError:  # no running master: the Host header is the client's
        return True


def _peer(client: Client) -> str | None:
    if not client.peername:
        return None
    host, port, *_ = client.peername
    return f"{host}:{port}"


def _cert_fields(cert: x509.Certificate | None) -> dict[str, Any]:
    if cert is None:
        return {"subject": None, "issuer": None, "serial": None, "sha256": None}
    identity = ClientIdentity(cert)
    return {
        "subject": identity.subject,
        "issuer": identity.issuer,
        "serial": identity.serial_hex,
        "sha256": identity.sha256,
    }


_VERBS = {
    "client_tls_refused": "refused",
    "client_tls_would_refuse": "would be refused (report mode)",
    "client_tls_handshake_failed": "handshake failed",
}


def _event(reason: str, enforced: bool) -> str:
    if not reason.startswith("client_cert_"):
        return "client_tls_handshake_failed"  # not a verdict on a certificate (version, cipher, hang-up)
    return "client_tls_refused" if enforced else "client_tls_would_refuse"


def _handshake_reason(error: str) -> str:
    """A failure OpenSSL's certificate verification did not report: why, from mitmproxy's message."""
    lowered = error.lower()
    if "peer did not return a certificate" in lowered or "certificate required" in lowered:
        return "client_cert_missing"
    if "unsupported protocol" in lowered or "cannot agree on a tls version" in lowered:
        return "tls_version_refused"
    if "no shared cipher" in lowered:
        return "tls_no_shared_cipher"
    if "connection closed" in lowered or "disconnected" in lowered:
        return "client_disconnected"
    return "tls_handshake_failed"


class ClientTls:
    """The compiled ``ClientTls`` policy: contexts per host name, hooks, and two checkpoint methods."""

    name = PLUGIN_NAME

    def __init__(
        self,
        policy: ClientTlsPolicy,
        source: str = "<ClientTls>",
        *,
        enforced: bool = True,
        on_failure: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.policy = policy
        self.source = source
        self.enforced = enforced
        self.header = policy.forward_header
        self.forward_cert = policy.forward_cert
        self.forward_chain = policy.forward_chain
        self.warnings = policy.warnings
        self.files = policy.files
        self.on_failure = on_failure  # counter hook: (reason, enforced)
        hosts = [self._compile(s) for s in policy.settings()]
        self._default = hosts[0]
        self._exact = {
            h.settings.host: h for h in hosts[1:] if h.settings.host and not h.settings.host.startswith("*.")
        }
        # longest suffix first: *.a.example.com before *.example.com
        self._wildcards = sorted(
            ((h.settings.host[1:], h) for h in hosts[1:] if h.settings.host and h.settings.host.startswith("*.")),
            key=lambda item: -len(item[0]),
        )
        self._per_host = len(hosts) > 1

    def _compile(self, settings: HostSettings) -> _Host:
        context, fp = server_context(
            settings,
            min_version=self.policy.min_tls_version,
            session_timeout=self.policy.session_timeout,
            enforced=self.enforced,
        )
        return _Host(settings, context, fp)

    def host_for(self, name: str | None) -> _Host:
        """The settings for an SNI (or Host) name: exact match, then the longest wildcard, then the default."""
        if not name:
            return self._default
        name = name.lower().rstrip(".")
        host = self._exact.get(name)
        if host is not None:
            return host
        for suffix, candidate in self._wildcards:
            # *.example.com covers a.example.com, not example.com nor a.b.example.com (RFC 6125)
            if name.endswith(suffix) and "." not in name[: -len(suffix)]:
                return candidate
        return self._default

    # -- connection checkpoint: mitmproxy's TLS hooks ------------------------------------------

    def tls_start_client(self, data: tls.TlsData) -> None:
        """Provide the handshake's ``SSL.Connection``; mitmproxy's TlsConfig then stands aside."""
        if data.ssl_conn is not None or data.is_dtls:
            return
        client = data.conn
        assert isinstance(client, Client)
        host = self.host_for(client.sni)
        conn = SSL.Connection(host.context)
        # As mitmproxy's TlsConfig: an explicit HTTP proxy speaks HTTP/1 inside CONNECT.
        layers = data.context.layers
        if len(layers) == 2 and isinstance(layers[0], modes.HttpProxy):
            client_alpn: bytes | None = b"http/1.1"
        else:
            client_alpn = client.alpn
        app_data = AppData(client_alpn=client_alpn, server_alpn=data.context.server.alpn, http2=_http2_enabled())
        verification = Verification(host.settings.host, host.settings.client_certificates, host.fingerprint,
                                    self.enforced, self.source)  # fmt: skip
        conn.set_app_data(connection_data(app_data, verification))
        conn.set_accept_state()
        data.ssl_conn = conn

    def tls_established_client(self, data: tls.TlsData) -> FailureReport | None:
        """Keep the verdict on the connection. Returns a report-mode failure (already logged), if any."""
        v = verification_of(data.ssl_conn)
        client = data.conn
        if v is None or not isinstance(client, Client):
            return None
        certs = [c.to_cryptography() for c in client.certificate_list]
        failure: FailureReport | None = None
        identity: ClientIdentity | None = None
        if v.error:
            failure = self._report(client, v, reason_for(v.error), leaf=certs[0] if certs else None)
        elif not certs and v.mode == "required":
            failure = self._report(client, v, "client_cert_missing")
        elif certs and v.mode != "off":
            identity = ClientIdentity(certs[0], tuple(certs[1:]), resumed=not v.called)
        state = ConnectionState(v.host, v.fingerprint, identity, failure)
        if identity is not None:
            state.summary = identity.summary()
        setattr(client, _STATE_ATTR, state)
        if failure is not None:
            self._emit(failure)
        return failure

    def tls_failed_client(self, data: tls.TlsData) -> FailureReport | None:
        """Explain a refused handshake: log line, counter. Returns the report (None: not ours)."""
        v = verification_of(data.ssl_conn)
        client = data.conn
        if v is None or not isinstance(client, Client):
            return None
        reason = reason_for(v.error) if v.error else _handshake_reason(client.error or "")
        report = self._report(client, v, reason)
        self._emit(report)
        return report

    def _report(
        self, client: Client, v: Verification, reason: str, *, leaf: x509.Certificate | None = None
    ) -> FailureReport:
        report: FailureReport = {
            "event": _event(reason, v.enforced),
            "reason": reason,
            "enforced": v.enforced,
            "verify_error": verify_error_string(v.error) if v.error else None,
            "verify_code": v.error or None,
            "depth": v.depth,
            **_cert_fields(v.cert),
            "client": _peer(client),
            "sni": escape_uri(client.sni) if client.sni else None,
            "host_policy": v.host,
            "source": v.source,
        }
        if leaf is not None and leaf != v.cert:
            report["leaf"] = _cert_fields(leaf)
        if v.error == 0 and client.error:
            text = client.error.encode("ascii", "backslashreplace").decode()
            report["tls_error"] = text[:_MAX_ERROR_TEXT]
        return report

    def _emit(self, report: FailureReport) -> None:
        # one JSON line: every certificate field in it is already escaped, and json escapes the rest
        log.info("sidegate: client TLS %s: %s", _VERBS[report["event"]], json.dumps(report, sort_keys=True))
        if self.on_failure is not None:
            try:
                self.on_failure(report["reason"], report["enforced"])
            except Exception:
                log.exception("sidegate: client TLS failure counter failed")

    # -- method request: plain HTTP on the TLS listener, forged identity headers -----------------

    def method_request(self, ex: Exchange) -> Reject | None:
        headers = ex.request.headers
        if self.header in headers:
            del headers[self.header]  # a client's own copy never reaches a plugin or the backend
        client = ex.flow.client_conn
        if not client.tls:
            # reverse mode detects TLS per connection: without this, plain HTTP would be served
            return Reject(
                "BAD_REQUEST", reason="plain_http_on_tls_port", message=PLAIN_HTTP_MESSAGE, source=self.source
            )
        host = self.host_for(client.sni)
        if self._per_host and _keeps_host_header():
            authority = ex.request.host_header
            if authority and self.host_for(_strip_port(authority)) is not host:
                # The Host names a host with other client-certificate rules than the SNI the
                # handshake used: refuse rather than let one host's rules admit another's requests.
                # (Without keep_host_header mitmproxy has already replaced the client's Host with
                # the reverse target's, and the client's Host reaches nothing.)
                return Reject(
                    "BAD_REQUEST", 421, reason="sni_host_mismatch", message="Misdirected Request", source=self.source
                )
        state = connection_state(client)
        if isinstance(state, ConnectionState):
            if state.failure is not None:
                return Reject("ACCESS_DENIED", reason=state.failure["reason"], source=self.source)
            if state.summary is not None:
                ex.details[self.name] = dict(state.summary)
            if state.identity is not None or host.mode != "required":
                return None
        elif host.mode != "required":
            return None
        # TLS without a verified certificate where one is required: a connection older than this
        # policy, a replayed flow, or one set up under rules that have since become stricter
        return Reject("ACCESS_DENIED", reason="client_cert_missing", source=self.source)

    # -- integration request: the verified identity for the backend ------------------------------

    def integration_request(self, ex: Exchange) -> None:
        headers = ex.request.headers
        if self.header in headers:
            del headers[self.header]
        state = connection_state(ex.flow.client_conn)
        if state is not None:
            value = state.xfcc(cert=self.forward_cert, chain=self.forward_chain)
            if value is not None:
                headers[self.header] = value

    def log_warnings(self) -> None:
        """Truststore warnings, once per load (API Gateway's truststoreWarnings)."""
        for warning in self.warnings:
            log.warning("sidegate: %s: ClientTls: %s", self.source, warning)


def _strip_port(authority: str) -> str:
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
