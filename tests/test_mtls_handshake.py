"""Client certificate verification in the handshake, in process: the verdict matrix of issue 6.

Every certificate is generated per run with ``addons/pki.py``. Each case runs a real TLS
handshake (Python's ``ssl`` as the client, sidegate's ``SSL.Context`` as the server, memory BIOs
between them) through the same hooks mitmproxy calls. ``build_matrix`` and ``handshake`` are
shared with the end-to-end tests, which run the same matrix against a live sidecar and nginx.
"""

from __future__ import annotations

import ssl
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from mitmproxy import certs, options
from mitmproxy.connection import Client
from mitmproxy.proxy.context import Context
from mitmproxy.tls import TlsData
from OpenSSL import SSL

from addons import pki
from addons.mtls import ClientTls, ClientTlsPolicy, connection_state
from addons.pki import Credential, Validity

VERIFY_DEPTH = 2  # the matrix's depth: two intermediates pass, three do not
SERVER_NAMES = ["localhost", "127.0.0.1", "public.localhost", "strict.localhost", "api.apps.localhost"]


@dataclass(frozen=True)
class Case:
    name: str
    cert: Path | None  # PEM: the leaf, then what the client sends with it
    key: Path | None
    accepted: bool
    reason: str | None = None  # the reason code sidegate reports when it refuses


@dataclass
class Matrix:
    folder: Path
    server_cert: Path
    server_key: Path
    server_root: Path  # what clients trust for the server
    trust_store: Path
    crls_pem: Path  # several PEM CRLs in one file
    crl_der: Path  # one more CRL, DER
    all_crls_pem: Path  # every CRL as PEM, for nginx's ssl_crl
    cases: list[Case] = field(default_factory=list)
    creds: dict[str, Credential] = field(default_factory=dict)
    cas: dict[str, Credential] = field(default_factory=dict)  # root, inter: to issue more clients

    def write_client(self, name: str, cred: Credential) -> Case:
        cert = pki.write_certs(self.folder / f"{name}.pem", cred.full_chain, force=True)
        key = pki.write_key(self.folder / f"{name}.key", cred.key, force=True)
        return Case(name, cert, key, True)

    def case(self, name: str) -> Case:
        return next(c for c in self.cases if c.name == name)

    def policy_yaml(self, **extra: Any) -> str:
        """The matrix's ClientTls document; ``extra`` adds or replaces top-level keys (YAML text values)."""
        keys: dict[str, Any] = {
            "kind": "ClientTls",
            "server_certificate": self.server_cert,
            "server_key": self.server_key,
            "trust_store": f"[{self.trust_store}]",
            "crls": f"[{self.crls_pem}, {self.crl_der}]",
            "verify_depth": VERIFY_DEPTH,
        }
        keys.update(extra)
        return "".join(f"{key}: {value}\n" for key, value in keys.items())

    def policy(self, **extra: Any) -> ClientTlsPolicy:
        from ruamel.yaml import YAML

        data = YAML(typ="safe").load(self.policy_yaml(**extra))
        return ClientTlsPolicy.model_validate(data)


def build_matrix(folder: Path) -> Matrix:
    """Every certificate of the verdict matrix, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    w = folder

    server_root = pki.create_root_ca("mtls test server root")
    server_inter = pki.create_intermediate_ca(server_root, "mtls test server intermediate")
    server = pki.create_server_cert(server_inter, SERVER_NAMES)

    root = pki.create_root_ca("mtls test client root")
    inter = pki.create_intermediate_ca(root, "mtls test client intermediate")
    deep1 = pki.create_intermediate_ca(root, "mtls deep 1", path_length=None)
    deep2 = pki.create_intermediate_ca(deep1, "mtls deep 2", path_length=None)
    deep3 = pki.create_intermediate_ca(deep2, "mtls deep 3", path_length=0)
    revoked_inter = pki.create_intermediate_ca(root, "mtls revoked intermediate")
    other_root = pki.create_root_ca("mtls other root")
    other_inter = pki.create_intermediate_ca(other_root, "mtls other intermediate")

    creds: dict[str, Credential] = {
        "rsa_leaf_from_root": pki.create_client_cert(root, "rsa client", key_type="rsa"),
        "ecdsa_leaf_from_root": pki.create_client_cert(root, "ecdsa client", key_type="ec"),
        "leaf_without_eku": pki.create_client_cert(root, "no eku client", eku=None),
        "via_intermediate_sent": pki.create_client_cert(inter, "intermediate client", uris=["spiffe://t/c"]),
        "two_intermediates_within_depth": pki.create_client_cert(deep2, "two deep client"),
        "three_intermediates_beyond_depth": pki.create_client_cert(deep3, "three deep client"),
        "expired": pki.create_client_cert(inter, "expired client", validity=Validity.expired()),
        "not_yet_valid": pki.create_client_cert(inter, "future client", validity=Validity.not_yet_valid()),
        "untrusted_ca_without_chain": pki.create_client_cert(other_inter, "stranger"),
        "untrusted_ca_with_chain": pki.create_client_cert(other_inter, "stranger with chain"),
        "self_signed": pki.create_client_cert(None, "self signed client"),
        "forged_issuer": pki.create_forged_issuer_cert(root.cert, "forged client"),
        "server_auth_only_eku": pki.create_client_cert(root, "server-ish", eku=pki.SERVER_AUTH),
        "revoked_leaf": pki.create_client_cert(inter, "revoked client"),
        "revoked_intermediate": pki.create_client_cert(revoked_inter, "client under revoked intermediate"),
    }
    leaf_only = creds["via_intermediate_sent"]
    creds["intermediate_not_sent"] = Credential(leaf_only.cert, leaf_only.key, ())
    stranger = creds["untrusted_ca_without_chain"]
    creds["untrusted_ca_without_chain"] = Credential(stranger.cert, stranger.key, ())
    with_chain = creds["untrusted_ca_with_chain"]
    creds["untrusted_ca_with_chain"] = Credential(with_chain.cert, with_chain.key, (*with_chain.chain, other_root.cert))

    crls = [
        pki.create_crl(root, [revoked_inter.cert.serial_number]),
        pki.create_crl(inter, [creds["revoked_leaf"].cert.serial_number]),
        pki.create_crl(deep1),
        pki.create_crl(deep2),
        pki.create_crl(revoked_inter),
    ]
    der_crl = pki.create_crl(deep3)

    m = Matrix(
        folder=w,
        server_cert=pki.write_certs(w / "server.pem", server.full_chain),
        server_key=pki.write_key(w / "server.key", server.key),
        server_root=pki.write_certs(w / "server-root.pem", [server_root.cert]),
        trust_store=pki.write_certs(w / "clients-ca.pem", [root.cert]),
        crls_pem=pki.write_crls(w / "clients.crl", crls),
        crl_der=pki.write_file(w / "deep3.crl.der", pki.crl_bytes(der_crl, "der")),
        all_crls_pem=pki.write_crls(w / "all-crls.pem", [*crls, der_crl]),
        creds=creds,
        cas={"root": root, "inter": inter, "other_root": other_root},
    )
    expected: dict[str, tuple[bool, str | None]] = {
        "rsa_leaf_from_root": (True, None),
        "ecdsa_leaf_from_root": (True, None),
        "leaf_without_eku": (True, None),
        "via_intermediate_sent": (True, None),
        "intermediate_not_sent": (False, "client_cert_untrusted"),
        "two_intermediates_within_depth": (True, None),
        "three_intermediates_beyond_depth": (False, "client_cert_chain_too_long"),
        "expired": (False, "client_cert_expired"),
        "not_yet_valid": (False, "client_cert_not_yet_valid"),
        "untrusted_ca_without_chain": (False, "client_cert_untrusted"),
        "untrusted_ca_with_chain": (False, "client_cert_untrusted"),
        "self_signed": (False, "client_cert_untrusted"),
        "forged_issuer": (False, "client_cert_signature_invalid"),
        "server_auth_only_eku": (False, "client_cert_purpose"),
        "revoked_leaf": (False, "client_cert_revoked"),
        "revoked_intermediate": (False, "client_cert_revoked"),
    }
    for name, (accepted, reason) in expected.items():
        cred = creds[name]
        cert = pki.write_certs(w / f"{name}.pem", cred.full_chain)
        key = pki.write_key(w / f"{name}.key", cred.key)
        m.cases.append(Case(name, cert, key, accepted, reason))
    m.cases.append(Case("no_certificate", None, None, False, "client_cert_missing"))
    return m


# -- an in-process handshake through sidegate's hooks ----------------------------------------------


@dataclass
class Handshake:
    ok: bool  # the server (sidegate) completed the handshake
    client: Client
    data: TlsData
    failure: dict[str, Any] | None = None
    error: str | None = None
    client_error: str | None = None
    version: str | None = None
    alpn: bytes | None = None


def client_context(
    m: Matrix, case: Case | None = None, *, version: str | None = None, alpn: list[str] | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(m.server_root)
    if case is not None and case.cert is not None and case.key is not None:
        ctx.load_cert_chain(case.cert, case.key)
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def handshake(
    ct: ClientTls,
    ctx: ssl.SSLContext,
    *,
    sni: str | None = "localhost",
    session: ssl.SSLSession | None = None,
    client: Client | None = None,
) -> tuple[Handshake, ssl.SSLObject]:
    """One handshake as mitmproxy drives it: tls_start_client, bytes, then established or failed."""
    client = client or Client(peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 443))
    client.sni = sni
    client.tls = True
    context = Context(client, options.Options())
    data = TlsData(client, context)
    ct.tls_start_client(data)
    server = data.ssl_conn
    assert server is not None
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    peer = ctx.wrap_bio(incoming, outgoing, server_hostname=sni or "localhost", session=session)
    client_done = server_done = False
    error: str | None = None
    client_error: str | None = None
    for _ in range(50):
        if not client_done:
            try:
                peer.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as e:
                client_error = str(e)
                client_done = True
        sent = outgoing.read()
        if sent and error is None:
            server.bio_write(sent)
        if not server_done and error is None:
            try:
                server.do_handshake()
                server_done = True
            except SSL.WantReadError:
                pass
            except SSL.Error as e:
                error = f"OpenSSL {e!r}"
        try:
            while True:
                incoming.write(server.bio_read(65536))
        except SSL.WantReadError:
            pass
        if (server_done or error) and client_done:
            break
    if server_done:
        # as mitmproxy's TLS layer: the peer's certificate first, then the chain it sent
        chain = [server.get_peer_certificate(), *(server.get_peer_cert_chain() or [])]
        client.certificate_list = [certs.Cert.from_pyopenssl(c) for c in chain if c is not None]
        client.alpn = server.get_alpn_proto_negotiated() or None
        client.tls_version = server.get_protocol_version_name()  # type: ignore[assignment]
        failure = ct.tls_established_client(TlsData(client, context, server))
        result = Handshake(True, client, data, failure, None, client_error, server.get_protocol_version_name())
        result.alpn = client.alpn
        return result, peer
    client.error = error or "connection closed"
    failure = ct.tls_failed_client(TlsData(client, context, server))
    return Handshake(False, client, data, failure, error, client_error), peer


# -- the matrix, in process ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    return build_matrix(tmp_path_factory.mktemp("matrix"))


@pytest.fixture(scope="module")
def client_tls(matrix: Matrix) -> ClientTls:
    return ClientTls(matrix.policy(), "policies/mtls.yaml:1")


CASE_NAMES = [
    "rsa_leaf_from_root",
    "ecdsa_leaf_from_root",
    "leaf_without_eku",
    "via_intermediate_sent",
    "intermediate_not_sent",
    "two_intermediates_within_depth",
    "three_intermediates_beyond_depth",
    "expired",
    "not_yet_valid",
    "untrusted_ca_without_chain",
    "untrusted_ca_with_chain",
    "self_signed",
    "forged_issuer",
    "server_auth_only_eku",
    "revoked_leaf",
    "revoked_intermediate",
    "no_certificate",
]


def test_matrix_covers_every_case_of_the_issue(matrix: Matrix) -> None:
    assert [c.name for c in matrix.cases] == CASE_NAMES


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_verdict_matrix_in_the_handshake(matrix: Matrix, client_tls: ClientTls, name: str, version: str) -> None:
    case = matrix.case(name)
    result, _ = handshake(client_tls, client_context(matrix, case, version=version))
    assert result.ok is case.accepted, (result.error, result.failure)
    if case.accepted:
        assert result.failure is None
        assert result.version == ("TLSv1.2" if version == "1.2" else "TLSv1.3")
        assert case.cert is not None
        sent = x509.load_pem_x509_certificates(case.cert.read_bytes())
        state = connection_state(result.client)
        assert state.identity.cert == sent[0]
        assert state.identity.chain == tuple(sent[1:])
    else:
        assert result.failure is not None
        assert result.failure["reason"] == case.reason, result.failure
        assert result.failure["enforced"] is True


def test_failure_report_names_the_openssl_error_and_the_certificate(matrix: Matrix, client_tls: ClientTls) -> None:
    revoked = matrix.creds["revoked_leaf"].cert
    result, _ = handshake(client_tls, client_context(matrix, matrix.case("revoked_leaf")))
    report = result.failure
    assert report is not None
    assert report["verify_error"] == "certificate revoked" and report["verify_code"] == 23
    assert report["depth"] == 0
    assert report["subject"] == "CN=revoked client"
    assert report["issuer"] == "CN=mtls test client intermediate"
    assert report["serial"] == f"{revoked.serial_number:x}"
    assert report["sha256"] == revoked.fingerprint(pki.hashes.SHA256()).hex()
    assert report["client"] == "127.0.0.1:50000" and report["sni"] == "localhost"
    assert report["source"] == "policies/mtls.yaml:1"


def test_revoked_intermediate_is_reported_at_its_depth(matrix: Matrix, client_tls: ClientTls) -> None:
    result, _ = handshake(client_tls, client_context(matrix, matrix.case("revoked_intermediate")))
    assert result.failure is not None
    assert (result.failure["reason"], result.failure["depth"]) == ("client_cert_revoked", 1)
    assert result.failure["subject"] == "CN=mtls revoked intermediate"


def test_missing_certificate_is_explained(matrix: Matrix, client_tls: ClientTls) -> None:
    result, _ = handshake(client_tls, client_context(matrix, None))
    assert result.failure is not None
    assert result.failure["reason"] == "client_cert_missing"
    assert result.failure["verify_error"] is None and result.failure["subject"] is None
    assert "peer did not return a certificate" in result.failure["tls_error"]


def yaml_block(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")
