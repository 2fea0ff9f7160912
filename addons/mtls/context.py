"""The OpenSSL server contexts of mutual TLS, and the per-handshake verification record.

Checkpoint: connection (``tls_start_client``). mitmproxy's own client contexts are cached and
accept any client certificate, or none (``request_client_cert``), so each trust configuration
gets its own ``SSL.Context`` here: peer verification (failing without a certificate when one is
required), the trust store and CRLs with ``crl_check_all`` as nginx's ``ssl_crl`` sets it, the
verify depth, a session-id context and a bounded session lifetime, and mitmproxy's ALPN callback
so HTTP/2 keeps working. Contexts are cached by a fingerprint of everything they are built from:
a policy reload that changes nothing here keeps the contexts, and with them the sessions clients
may resume; a change (a new CRL) builds a new context whose sessions start from scratch.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy.addons.tlsconfig import _DEFAULT_CIPHERS, AppData, alpn_select_callback
from mitmproxy.net import tls as net_tls
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from addons.mtls.models import ClientCertificates, HostSettings

log = logging.getLogger("sidegate")

APP_DATA_KEY = "sidegate_mtls"  # our entry in the AppData dict mitmproxy's ALPN callback also reads
MAX_CACHED_CONTEXTS = 32
SSL_MODE_NO_AUTO_CHAIN = 0x8  # never complete the server chain from the *client* trust store
SID_CTX_MAX = 32  # SSL_MAX_SID_CTX_LENGTH

# Verification errors (X509_V_ERR_*, stable numbers) -> the reason codes of metrics and logs.
_REASONS: dict[int, str] = {
    2: "client_cert_untrusted",  # unable to get issuer certificate
    18: "client_cert_untrusted",  # self-signed certificate
    19: "client_cert_untrusted",  # self-signed certificate in certificate chain
    20: "client_cert_untrusted",  # unable to get local issuer certificate
    21: "client_cert_untrusted",  # unable to verify the first certificate
    27: "client_cert_untrusted",  # certificate not trusted
    4: "client_cert_signature_invalid",
    6: "client_cert_signature_invalid",
    7: "client_cert_signature_invalid",  # certificate signature failure
    9: "client_cert_not_yet_valid",
    10: "client_cert_expired",
    23: "client_cert_revoked",
    3: "client_cert_crl_unavailable",  # unable to get certificate CRL
    8: "client_cert_crl_unavailable",  # CRL signature failure
    11: "client_cert_crl_unavailable",  # CRL is not yet valid
    12: "client_cert_crl_unavailable",  # CRL has expired
    33: "client_cert_crl_unavailable",  # unable to get CRL issuer certificate
    22: "client_cert_chain_too_long",
    24: "client_cert_invalid_ca",
    25: "client_cert_invalid_ca",  # path length constraint exceeded
    32: "client_cert_invalid_ca",  # key usage does not include certificate signing
    26: "client_cert_purpose",  # unsuitable certificate purpose (EKU without clientAuth)
    28: "client_cert_purpose",  # certificate rejected
}


def reason_for(code: int) -> str:
    return _REASONS.get(code, "client_cert_invalid")


def verify_error_string(code: int) -> str:
    try:
        return str(_ffi.string(_lib.X509_verify_cert_error_string(code)).decode("ascii", "replace"))
    except Exception:  # a binding without the function: the number still identifies it
        return f"verify error {code}"


@dataclass
class Verification:
    """What one handshake's verification saw; lives in the connection's AppData."""

    host: str | None  # the host override in force (None: the document's own settings)
    mode: ClientCertificates
    fingerprint: bytes  # of the context, so the verdict names the exact configuration it came from
    enforced: bool
    source: str
    called: bool = False  # False after a handshake without verification (session resumption)
    error: int = 0
    depth: int | None = None
    cert: x509.Certificate | None = None  # the certificate at the failing depth


def connection_data(app_data: AppData, verification: Verification) -> dict[str, object]:
    """mitmproxy's ``AppData`` (read by its ALPN select callback) plus our verification record."""
    data: dict[str, object] = dict(app_data)
    data[APP_DATA_KEY] = verification
    return data


def verification_of(conn: SSL.Connection | None) -> Verification | None:
    if conn is None:
        return None
    try:
        data = conn.get_app_data()
    except Exception:
        return None
    v = data.get(APP_DATA_KEY) if isinstance(data, dict) else None
    return v if isinstance(v, Verification) else None


def _verify_callback(conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
    """Called by OpenSSL for every certificate of the chain, and for every error.

    Enforced: OpenSSL's own verdict (``ok``) stands, and the first failure ends the handshake
    with the alert OpenSSL picks for it. Report mode: the verdict is recorded and the handshake
    goes on. Nothing here may raise: an exception would fail the handshake without a reason.
    """
    try:
        v = verification_of(conn)
        if v is None:
            return bool(ok)
        v.called = True
        if not ok and v.error == 0:
            v.error, v.depth, v.cert = errnum, depth, cert.to_cryptography()
        return bool(ok) or not v.enforced
    except Exception:
        log.exception("sidegate: client certificate verification callback failed; refusing the handshake")
        return False


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def fingerprint(settings: HostSettings, *, min_version: str, session_timeout: float, enforced: bool) -> bytes:
    """SHA-256 over everything a context is built from; also its session-id context."""
    h = hashlib.sha256(b"sidegate-mtls-v1\0")
    for part in (
        settings.client_certificates,
        str(settings.verify_depth),
        min_version,
        repr(session_timeout),
        "enforce" if enforced else "report",
    ):
        h.update(part.encode() + b"\0")
    for cert in settings.server_certificate.chain:
        h.update(b"S" + _der(cert))
    h.update(b"K" + settings.server_key.key_der())
    for bundle in settings.trust_store:
        for ca in bundle.cas:
            h.update(b"C" + _der(ca.cert))
    for crl_file in settings.crls:
        for crl in crl_file.crls:
            h.update(b"R" + crl.public_bytes(serialization.Encoding.DER))
    return h.digest()


_contexts: OrderedDict[bytes, SSL.Context] = OrderedDict()


def server_context(
    settings: HostSettings, *, min_version: Literal["1.2", "1.3"], session_timeout: float, enforced: bool
) -> tuple[SSL.Context, bytes]:
    """The (cached) context for these settings and its fingerprint."""
    key = fingerprint(settings, min_version=min_version, session_timeout=session_timeout, enforced=enforced)
    context = _contexts.get(key)
    if context is None:
        context = build_context(
            settings, min_version=min_version, session_timeout=session_timeout, enforced=enforced, sid=key
        )
        _contexts[key] = context
        while len(_contexts) > MAX_CACHED_CONTEXTS:
            _contexts.popitem(last=False)
    else:
        _contexts.move_to_end(key)
    return context, key


def verify_mode(mode: ClientCertificates, enforced: bool) -> int:
    if mode == "off":
        return int(SSL.VERIFY_NONE)
    if mode == "required" and enforced:
        return int(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    return int(SSL.VERIFY_PEER)


def build_context(
    settings: HostSettings,
    *,
    min_version: Literal["1.2", "1.3"],
    session_timeout: float,
    enforced: bool,
    sid: bytes,
) -> SSL.Context:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION if min_version == "1.3" else SSL.TLS1_2_VERSION)
    context.set_options(net_tls.DEFAULT_OPTIONS)
    # mitmproxy's list: without it OpenSSL may pick a TLS 1.2 cipher HTTP/2 forbids
    context.set_cipher_list(":".join(_DEFAULT_CIPHERS).encode())
    if net_tls.log_master_secret is not None:  # SSLKEYLOGFILE, as for mitmproxy's own contexts
        context.set_keylog_callback(net_tls.log_master_secret)

    leaf, *intermediates = settings.server_certificate.chain
    context.use_certificate(leaf)
    context.use_privatekey(settings.server_key.key)
    context.check_privatekey()
    context.set_mode(SSL_MODE_NO_AUTO_CHAIN)
    for cert in intermediates:
        context.add_extra_chain_cert(cert)

    context.set_alpn_select_callback(alpn_select_callback)

    mode = settings.client_certificates
    if mode != "off":
        store = context.get_cert_store()
        assert store is not None  # a fresh context always has one
        for bundle in settings.trust_store:
            for ca in bundle.cas:
                store.add_cert(crypto.X509.from_cryptography(ca.cert))
                context.add_client_ca(ca.cert)  # as nginx's ssl_client_certificate: helps clients pick a cert
        if settings.crls:
            for crl_file in settings.crls:
                for crl in crl_file.crls:
                    store.add_crl(crl)
            # nginx's ssl_crl: revocation of the leaf and of every CA above it
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)
        context.set_verify_depth(settings.verify_depth)
        context.set_verify(verify_mode(mode, enforced), _verify_callback)
    else:
        context.set_verify(SSL.VERIFY_NONE, None)

    # Resumption skips verification, so sessions live only as long as the policy says. Without a
    # session-id context OpenSSL refuses to resume sessions of verified peers and cuts them off.
    context.set_session_id(sid[:SID_CTX_MAX])
    if session_timeout > 0 and enforced:
        context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
        context.set_timeout(max(1, math.ceil(session_timeout)))
    else:
        # Report mode resumes nothing: every connection's verdict must be known, not inherited.
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        context.set_options(SSL.OP_NO_TICKET)
    return context
