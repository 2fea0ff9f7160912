"""Mutual TLS units: the ClientTls policy (errors and truststore warnings), the forwarded identity
(XFCC escaping, ``clientCert``), the checkpoint methods, sessions, per-host rules and report mode."""

from __future__ import annotations

import json
import logging
import re
import ssl
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import drive
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from mitmproxy.connection import Client
from mitmproxy.test import tflow, tutils
from test_mtls_handshake import Matrix, build_matrix, client_context, handshake

from addons import pki
from addons.decision import Exchange, Reject
from addons.mtls import ClientTls, ClientTlsPolicy, client_cert_context, client_identity, connection_state
from addons.mtls.identity import ClientIdentity, escape_dn_value, format_dn, serial_colon_hex
from addons.policy import models
from addons.policy.errors import PolicyError
from addons.policy.loader import load_documents
from addons.policy.policyset import empty_policy_set

HOSTILE_CN = 'evil\r\nx-injected: 1;Subject="CN=admin",URI=spiffe://admin'


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    return build_matrix(tmp_path_factory.mktemp("mtls"))


@pytest.fixture
def kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """``kind: ClientTls`` known to the loader for this test (gateway wiring adds it for good)."""
    monkeypatch.setitem(models.KINDS, "ClientTls", ClientTlsPolicy)


def load_one(tmp_path: Path, text: str) -> ClientTlsPolicy:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "mtls.yaml").write_text(text)
    (doc,) = load_documents(policies)
    assert isinstance(doc.model, ClientTlsPolicy)
    return doc.model


def flow_on(client: Client, *, headers: list[tuple[bytes, bytes]] | None = None, host: str = "localhost"):
    f = tflow.tflow(req=tutils.treq(headers=[(b"host", host.encode()), *(headers or [])]))
    f.client_conn = client
    return f


# -- the policy: errors at file:line, warnings with the bundle's file:line ---------------------------


def test_unreadable_trust_store_is_an_error_at_its_line(tmp_path: Path, matrix: Matrix, kinds: None) -> None:
    text = matrix.policy_yaml().replace(str(matrix.trust_store), "certs/missing.pem")
    with pytest.raises(PolicyError) as e:
        load_one(tmp_path, text)
    assert re.search(
        r"policies/mtls\.yaml:4:\d+: trust_store\[0\]: cannot read trust store certs/missing\.pem \(No such file",
        str(e.value),
    ), str(e.value)


def test_bundle_without_certificates_is_an_error(tmp_path: Path, matrix: Matrix, kinds: None) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("# nothing here\n")
    with pytest.raises(PolicyError, match=r"trust_store\[0\]: no PEM certificates in trust store"):
        load_one(tmp_path, matrix.policy_yaml().replace(str(matrix.trust_store), str(empty)))


def test_server_key_must_match_and_is_never_echoed(tmp_path: Path, matrix: Matrix, kinds: None) -> None:
    other = tmp_path / "other.key"
    pki.write_key(other, pki.generate_key())
    with pytest.raises(PolicyError, match="does not belong to the certificate") as e:
        load_one(tmp_path, matrix.policy_yaml().replace(str(matrix.server_key), str(other)))
    assert "PRIVATE KEY" not in str(e.value)
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0IHN0dWZm\n-----END PRIVATE KEY-----\n")
    with pytest.raises(PolicyError, match="not an unencrypted PEM private key") as e:
        load_one(tmp_path, matrix.policy_yaml().replace(str(matrix.server_key), str(garbage)))
    assert "c2VjcmV0" not in str(e.value)


def test_server_key_from_a_secret_reference(tmp_path: Path, matrix: Matrix, kinds: None, monkeypatch) -> None:
    monkeypatch.setenv("MTLS_KEY", matrix.server_key.read_text())
    policy = load_one(
        tmp_path, matrix.policy_yaml().replace(f"server_key: {matrix.server_key}", "server_key: {secret_env: MTLS_KEY}")
    )
    assert repr(policy.server_key) == "<server key from env:MTLS_KEY>"
    policy = load_one(
        tmp_path,
        matrix.policy_yaml().replace(
            f"server_key: {matrix.server_key}", f"server_key: {{secret_file: {matrix.server_key}}}"
        ),
    )
    assert policy.server_key.file == matrix.server_key.resolve()
    assert matrix.server_key.resolve() in policy.files and matrix.trust_store.resolve() in policy.files


def test_required_certificates_need_a_trust_store(tmp_path: Path, matrix: Matrix, kinds: None) -> None:
    text = f"kind: ClientTls\nserver_certificate: {matrix.server_cert}\nserver_key: {matrix.server_key}\n"
    with pytest.raises(PolicyError, match="client_certificates: required needs a trust_store"):
        load_one(tmp_path, text)
    assert load_one(tmp_path, text + "client_certificates: off\n").client_certificates == "off"


def test_unquoted_tls_version_and_bad_host_names(tmp_path: Path, matrix: Matrix, kinds: None) -> None:
    assert load_one(tmp_path, matrix.policy_yaml(min_tls_version=1.3)).min_tls_version == "1.3"
    with pytest.raises(PolicyError, match=r"min_tls_version: expected one of: '1\.2', '1\.3'"):
        load_one(tmp_path, matrix.policy_yaml(min_tls_version="1.1"))
    with pytest.raises(PolicyError, match="expected a host name"):
        load_one(tmp_path, matrix.policy_yaml(hosts="{'bad host': {client_certificates: off}}"))
    with pytest.raises(PolicyError, match=r"hosts\.x\.example\.com: unknown key|unknown key"):
        load_one(tmp_path, matrix.policy_yaml(hosts="{x.example.com: {verify: 1}}"))


def test_truststore_warnings_name_file_and_line(tmp_path: Path, kinds: None, matrix: Matrix) -> None:
    good = pki.create_root_ca("good root")
    expired = pki.create_root_ca("expired root", validity=pki.Validity.expired())
    future = pki.create_root_ca("future root", validity=pki.Validity.not_yet_valid())
    leaf = pki.create_client_cert(good, "not a CA")
    weak = pki.issue_certificate("weak root", None, key=rsa.generate_private_key(65537, 1024), ca=True)
    orphan = pki.create_intermediate_ca(pki.create_root_ca("absent root"), "orphan intermediate")
    bundle = tmp_path / "bundle.pem"
    parts = [
        b"# team bundle\n",
        pki.certs_pem([good.cert]),  # line 2
        pki.certs_pem([expired.cert]),
        pki.certs_pem([future.cert]),
        pki.certs_pem([leaf.cert]),
        pki.certs_pem([weak.cert]),
        pki.certs_pem([orphan.cert]),
        pki.certs_pem([good.cert]),
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        pki.key_pem(good.key),
    ]
    bundle.write_bytes(b"".join(parts))
    starts = {}
    for number, line in enumerate(bundle.read_text().splitlines(), 1):
        if line.startswith("-----BEGIN"):
            starts[len(starts)] = number
    crl = tmp_path / "old.crl"
    crl.write_bytes(
        pki.crl_bytes(pki.create_crl(good, last_update=pki.datetime(2020, 1, 1, tzinfo=pki.UTC),
                                     next_update=pki.datetime(2020, 2, 1, tzinfo=pki.UTC)))
    )  # fmt: skip
    text = (
        f"kind: ClientTls\nserver_certificate: {matrix.server_cert}\nserver_key: {matrix.server_key}\n"
        f"trust_store: [{bundle}]\ncrls: [{crl}]\n"
    )
    policy = load_one(tmp_path, text)
    warnings = "\n".join(policy.warnings)
    b = str(bundle)
    assert f"{b}:{starts[1]}: 'CN=expired root' expired on" in warnings
    assert f"{b}:{starts[2]}: 'CN=future root' is not valid before" in warnings
    assert f"{b}:{starts[3]}: 'CN=not a CA' is not a CA certificate" in warnings
    assert f"{b}:{starts[4]}: 'CN=weak root' has a weak or unsupported key: RSA key of 1024 bits" in warnings
    assert f"{b}:{starts[5]}: 'CN=orphan intermediate' is issued by 'CN=absent root', which is not in" in warnings
    assert f"{b}:{starts[6]}: 'CN=good root' appears twice" in warnings
    assert f"{b}:{starts[7]}: not a valid X.509 certificate" in warnings
    assert f"{b}:{starts[8]}: PRIVATE KEY block, not a CERTIFICATE (a private key: remove it" in warnings
    assert f"{crl}:1: CRL of 'CN=good root' expired on 2020-02-01" in warnings
    assert f"{b}:{starts[1]}: 'CN=expired root' has no CRL among the crls" in warnings
    assert f"{b}:{starts[0]}: 'CN=good root' has no CRL" not in warnings
    assert f"{b}:{starts[0]}: 'CN=good root' expired" not in warnings
    assert len(policy.trust_store[0].cas) == 6  # malformed, duplicate and key blocks are skipped


def test_crls_load_from_multi_pem_and_der(matrix: Matrix) -> None:
    policy = matrix.policy()
    pem, der = policy.crls
    assert len(pem.crls) == 5 and len(der.crls) == 1
    assert policy.warnings == ()
    schema = ClientTlsPolicy.model_json_schema()
    assert schema["properties"]["trust_store"]["items"]["type"] == "string"


def test_warnings_are_logged_with_the_document_source(matrix: Matrix, caplog, tmp_path: Path) -> None:
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(
        pki.certs_pem([matrix.cas["root"].cert, pki.create_root_ca("old", validity=pki.Validity.expired()).cert])
    )
    ct = ClientTls(matrix.policy().model_copy(update={"trust_store": [pki_bundle(bundle)]}), "policies/mtls.yaml:1")
    with caplog.at_level(logging.WARNING, logger="sidegate"):
        ct.log_warnings()
    assert f"sidegate: policies/mtls.yaml:1: ClientTls: {bundle}:" in caplog.text and "expired on" in caplog.text


def pki_bundle(path: Path):
    from addons.mtls.models import TrustBundle

    return TrustBundle.load(str(path))


# -- the forwarded identity ------------------------------------------------------------------------


def hostile_cert(matrix: Matrix) -> pki.Credential:
    name = pki.x509_name(HOSTILE_CN, organization='Quote "Co", Ltd\n', unit="a\\b;c=d+é<>#")
    return pki.create_client_cert(
        matrix.cas["inter"], name, uris=['spiffe://x/"a b";c=d\r\nx-bad: 1'], dns_names=["client.test"]
    )


def parse_xfcc(value: str) -> list[tuple[str, str]]:
    """Envoy's grammar: key=value pairs split by ';', values optionally double-quoted with \\ escapes."""
    pairs, i = [], 0
    while i < len(value):
        eq = value.index("=", i)
        key = value[i:eq]
        i = eq + 1
        if i < len(value) and value[i] == '"':
            i += 1
            out = []
            while value[i] != '"':
                if value[i] == "\\":
                    out.append(value[i : i + 2])
                    i += 2
                else:
                    out.append(value[i])
                    i += 1
            pairs.append((key, "".join(out)))
            i += 1
        else:
            end = value.find(";", i)
            end = len(value) if end < 0 else end
            pairs.append((key, value[i:end]))
            i = end
        if i < len(value):
            assert value[i] == ";", value[i:]
            i += 1
    return pairs


def test_subject_is_escaped_exactly_as_openssl_rfc2253(matrix: Matrix, tmp_path: Path) -> None:
    cred = hostile_cert(matrix)
    path = pki.write_certs(tmp_path / "hostile.pem", [cred.cert])
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-subject", "-issuer", "-nameopt", "RFC2253"],
        capture_output=True, check=True,
    )  # fmt: skip
    subject_line, issuer_line = out.stdout.decode("ascii").splitlines()
    assert format_dn(cred.cert.subject) == subject_line.removeprefix("subject=")
    assert format_dn(cred.cert.issuer) == issuer_line.removeprefix("issuer=")


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain", "plain"),
        ("a,b+c", "a\\,b\\+c"),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("<x>;", "\\<x\\>\\;"),
        ("#lead", "\\#lead"),
        (" both ", "\\ both\\ "),
        ("cr\rlf\nnul\x00del\x7f", "cr\\0Dlf\\0Anul\\00del\\7F"),
        ("é", "\\C3\\A9"),
    ],
)
def test_dn_value_escaping(value: str, escaped: str) -> None:
    assert escape_dn_value(value) == escaped


def test_xfcc_of_a_hostile_certificate_cannot_break_the_header(matrix: Matrix) -> None:
    cred = hostile_cert(matrix)
    identity = ClientIdentity(cred.cert, cred.chain)
    value = identity.xfcc(cert=True, chain=True)
    assert all(0x20 <= b < 0x7F for b in value.encode("latin-1")), value
    parsed = parse_xfcc(value)
    assert [k for k, _ in parsed] == ["Hash", "Serial", "Cert", "Chain", "Subject", "URI", "DNS"]
    fields = dict(parsed)
    assert fields["Hash"] == hashlib_sha256(cred.cert)
    assert fields["Serial"] == f"{cred.cert.serial_number:x}"
    assert fields["Subject"] == format_dn(cred.cert.subject)
    assert fields["Subject"].startswith('CN=evil\\0D\\0Ax-injected: 1\\;Subject=\\"CN=admin\\"\\,URI=')
    assert fields["URI"] == "spiffe://x/%22a%20b%22;c=d%0D%0Ax-bad:%201"
    assert fields["DNS"] == "client.test"
    assert x509.load_pem_x509_certificate(unquote(fields["Cert"]).encode()) == cred.cert
    chain = x509.load_pem_x509_certificates(unquote(fields["Chain"]).encode())
    assert chain == [cred.cert, *cred.chain]


def hashlib_sha256(cert: x509.Certificate) -> str:
    import hashlib

    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_client_cert_context_has_api_gateways_shape(matrix: Matrix) -> None:
    root = matrix.cas["root"]
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.COMMON_NAME, "c1")])
    validity = pki.Validity(
        pki.datetime(2019, 5, 8, 2, 30, 2, tzinfo=pki.UTC), pki.datetime(2031, 8, 5, 9, 36, 4, tzinfo=pki.UTC)
    )
    cred = pki.create_client_cert(root, name, validity=validity, serial=0xA1B2C)
    cc = ClientIdentity(cred.cert).client_cert()
    assert cc == {
        "clientCertPem": cred.cert.public_bytes(serialization.Encoding.PEM).decode(),
        "subjectDN": "C=US,CN=c1",
        "issuerDN": "CN=mtls test client root",
        "serialNumber": "0a:1b:2c",
        "validity": {"notBefore": "May  8 02:30:02 2019 GMT", "notAfter": "Aug  5 09:36:04 2031 GMT"},
    }
    assert serial_colon_hex(0xA1) == "a1"


# -- checkpoint methods ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_tls(matrix: Matrix) -> ClientTls:
    return ClientTls(matrix.policy(), "policies/mtls.yaml:1")


def established(ct: ClientTls, matrix: Matrix, name: str, **kw) -> Client:
    result, _ = handshake(ct, client_context(matrix, matrix.case(name)), **kw)
    assert result.ok, result.error
    return result.client


def test_plain_http_on_the_tls_listener_is_refused(client_tls: ClientTls) -> None:
    f = tflow.tflow()
    f.client_conn.tls = False
    f.request.headers["x-forwarded-client-cert"] = "Hash=00"
    reject = client_tls.method_request(Exchange(f, empty_policy_set()))
    assert reject == Reject(
        "BAD_REQUEST",
        reason="plain_http_on_tls_port",
        message="The plain HTTP request was sent to HTTPS port",
        source="policies/mtls.yaml:1",
    )
    assert "x-forwarded-client-cert" not in f.request.headers


def test_spoofed_header_is_replaced_by_the_verified_identity(client_tls: ClientTls, matrix: Matrix) -> None:
    client = established(client_tls, matrix, "via_intermediate_sent")
    f = flow_on(client, headers=[(b"X-Forwarded-Client-Cert", b'Hash=00;Subject="CN=admin"')] * 2)
    ex = Exchange(f, empty_policy_set())
    assert client_tls.method_request(ex) is None
    assert "x-forwarded-client-cert" not in f.request.headers
    assert ex.details["client_tls"]["subject"] == "CN=intermediate client"
    f.request.headers["x-forwarded-client-cert"] = "Hash=11"  # added again by a later plugin or template
    client_tls.integration_request(ex)
    values = f.request.headers.get_all("x-forwarded-client-cert")
    identity = client_identity(f)
    assert identity is not None
    assert values == [
        f'Hash={identity.sha256};Serial={identity.serial_hex};Subject="CN=intermediate client";URI=spiffe://t/c'
    ]
    assert client_cert_context(ex)["subjectDN"] == "CN=intermediate client"  # type: ignore[index]


def test_forward_cert_and_chain_options(matrix: Matrix) -> None:
    ct = ClientTls(matrix.policy(forward_cert="true", forward_chain="true", forward_header="X-Client-Cert"))
    client = established(ct, matrix, "via_intermediate_sent")
    f = flow_on(client)
    ct.integration_request(Exchange(f, empty_policy_set()))
    fields = dict(parse_xfcc(f.request.headers["x-client-cert"]))
    assert len(x509.load_pem_x509_certificates(unquote(fields["Chain"]).encode())) == 2
    assert "x-forwarded-client-cert" not in f.request.headers


def test_tls_without_a_verified_certificate_is_refused_where_required(client_tls: ClientTls) -> None:
    # TLS set up before the policy existed (mitmproxy's own context), or a replayed flow
    f = tflow.tflow()
    f.client_conn.tls = True
    reject = client_tls.method_request(Exchange(f, empty_policy_set()))
    assert reject is not None and (reject.response_type, reject.reason) == ("ACCESS_DENIED", "client_cert_missing")


def test_failure_counter_hook(matrix: Matrix) -> None:
    counted: list[tuple[str, bool]] = []
    ct = ClientTls(matrix.policy(), on_failure=lambda reason, enforced: counted.append((reason, enforced)))
    handshake(ct, client_context(matrix, matrix.case("expired")))
    handshake(ct, client_context(matrix, None))
    assert counted == [("client_cert_expired", True), ("client_cert_missing", True)]


def test_failure_is_logged_as_one_json_line(matrix: Matrix, client_tls: ClientTls, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="sidegate"):
        handshake(client_tls, client_context(matrix, matrix.case("self_signed")))
    (record,) = [r for r in caplog.records if "client TLS refused" in r.getMessage()]
    report = json.loads(record.getMessage().split("refused: ", 1)[1])
    assert report["reason"] == "client_cert_untrusted"
    assert report["verify_error"] == "self-signed certificate" and report["subject"] == "CN=self signed client"


def test_report_mode_lets_the_handshake_through_and_records_why(matrix: Matrix) -> None:
    ct = ClientTls(matrix.policy(mode="report"), enforced=False)
    result, _ = handshake(ct, client_context(matrix, matrix.case("revoked_leaf")))
    assert result.ok
    assert result.failure is not None and result.failure["event"] == "client_tls_would_refuse"
    assert result.failure["reason"] == "client_cert_revoked"
    f = flow_on(result.client)
    reject = ct.method_request(Exchange(f, empty_policy_set()))
    assert reject is not None and reject.reason == "client_cert_revoked"  # the runner records it report-only
    ct.integration_request(Exchange(f, empty_policy_set()))
    assert "x-forwarded-client-cert" not in f.request.headers  # an unverified identity is never forwarded
    missing, _ = handshake(ct, client_context(matrix, None))
    assert missing.ok and missing.failure is not None and missing.failure["reason"] == "client_cert_missing"


# -- sessions --------------------------------------------------------------------------------------


def resume(ct: ClientTls, matrix: Matrix, version: str, *, first: ClientTls | None = None):
    """A full handshake (with ``first``, default ``ct``), then a resumption attempt with ``ct``."""
    ctx = client_context(matrix, matrix.case("via_intermediate_sent"), version=version)
    result, peer = handshake(first or ct, ctx)
    assert result.ok
    try:
        peer.read(1)  # TLS 1.3 session tickets come after the handshake: let the client read them
    except ssl.SSLWantReadError:
        pass
    return handshake(ct, ctx, session=peer.session)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_sessions_resume_and_keep_the_identity(client_tls: ClientTls, matrix: Matrix, version: str) -> None:
    again, peer = resume(client_tls, matrix, version)
    assert again.ok and peer.session_reused
    state = connection_state(again.client)
    assert state.identity.resumed and state.identity.chain == ()  # OpenSSL keeps only the leaf
    assert state.identity.subject == "CN=intermediate client"


def test_no_resumption_when_the_lifetime_is_zero_or_the_trust_changed(matrix: Matrix) -> None:
    ct = ClientTls(matrix.policy(session_timeout=0))
    again, peer = resume(ct, matrix, "1.3")
    assert again.ok and not peer.session_reused
    # a reload that changes nothing keeps the context, and so the sessions
    a, b = ClientTls(matrix.policy()), ClientTls(matrix.policy())
    assert a.host_for(None).context is b.host_for(None).context
    again, peer = resume(b, matrix, "1.3", first=a)
    assert again.ok and peer.session_reused
    # a new CRL builds a new context: sessions of the old one are not resumed
    c = ClientTls(matrix.policy(crls=f"[{matrix.crls_pem}]"))
    assert c.host_for(None).context is not a.host_for(None).context
    again, peer = resume(c, matrix, "1.3", first=a)
    assert not peer.session_reused


# -- per-host rules, versions, ALPN ----------------------------------------------------------------


def test_hosts_choose_rules_by_sni(matrix: Matrix) -> None:
    other_store = pki.write_certs(matrix.folder / "other-store.pem", [matrix.cas["other_root"].cert], force=True)
    ct = ClientTls(
        matrix.policy(
            hosts=f"{{public.localhost: {{client_certificates: off}}, '*.apps.localhost': "
            f"{{trust_store: [{other_store}], crls: []}}}}"
        )
    )
    assert ct.host_for("PUBLIC.localhost.").settings.host == "public.localhost"
    assert ct.host_for("api.apps.localhost").settings.host == "*.apps.localhost"
    assert ct.host_for("x.api.apps.localhost").settings.host is None
    public, _ = handshake(ct, client_context(matrix, None), sni="public.localhost")
    assert public.ok
    f = flow_on(public.client, host="public.localhost")
    assert ct.method_request(Exchange(f, empty_policy_set())) is None
    # the Host header may not move a request to a host with other rules than the SNI's
    f = flow_on(public.client, host="localhost:8443")
    reject = ct.method_request(Exchange(f, empty_policy_set()))
    assert reject is not None and (reject.status, reject.reason) == (421, "sni_host_mismatch")
    strict, _ = handshake(ct, client_context(matrix, None), sni="localhost")
    assert not strict.ok
    stranger = matrix.cases[0].__class__("s", *_stranger(matrix), True)
    apps, _ = handshake(ct, client_context(matrix, stranger), sni="api.apps.localhost")
    assert apps.ok, apps.error
    default, _ = handshake(ct, client_context(matrix, stranger), sni="localhost")
    assert not default.ok and default.failure is not None
    assert default.failure["reason"] == "client_cert_untrusted"


def _stranger(matrix: Matrix) -> tuple[Path, Path]:
    case = matrix.write_client("stranger_direct", pki.create_client_cert(matrix.cas["other_root"], "stranger direct"))
    assert case.cert is not None and case.key is not None
    return case.cert, case.key


def test_minimum_tls_version(matrix: Matrix) -> None:
    ct = ClientTls(matrix.policy(min_tls_version='"1.3"'))
    old, _ = handshake(ct, client_context(matrix, matrix.case("via_intermediate_sent"), version="1.2"))
    assert not old.ok and old.failure is not None and old.failure["reason"] == "tls_version_refused"
    assert old.failure["event"] == "client_tls_handshake_failed"
    new, _ = handshake(ct, client_context(matrix, matrix.case("via_intermediate_sent"), version="1.3"))
    assert new.ok and new.version == "TLSv1.3"


@pytest.mark.parametrize(("offer", "expected"), [(["h2", "http/1.1"], b"h2"), (["http/1.1"], b"http/1.1")])
def test_alpn_as_mitmproxy_negotiates_it(client_tls: ClientTls, matrix: Matrix, offer, expected) -> None:
    result, _ = handshake(client_tls, client_context(matrix, matrix.case("ecdsa_leaf_from_root"), alpn=offer))
    assert result.ok and result.alpn == expected


# -- inside the pipeline ---------------------------------------------------------------------------


async def test_plain_http_gets_the_gateway_400_with_trace(make_gateway, matrix: Matrix, kinds: None) -> None:
    from mtls_entry import MtlsWiring

    _tctx, gate = make_gateway({"api.yaml": "kind: Api\n", "mtls.yaml": matrix.policy_yaml()})
    MtlsWiring(gate)
    gate.reload()
    f = tflow.tflow()
    f.client_conn.tls = False
    await drive(gate, f)
    assert f.response is not None and f.response.status_code == 400
    assert json.loads(f.response.content) == {"message": "The plain HTTP request was sent to HTTPS port"}
    assert f.response.headers["x-amzn-ErrorType"] == "BadRequestException"
    entry = f.metadata["sidegate"]["trace"][0]
    assert (entry["plugin"], entry["reason"], entry["source"]) == (
        "client_tls",
        "plain_http_on_tls_port",
        "policies/mtls.yaml:1",
    )


def test_the_dev_pki_of_sidegate_certs_works_as_documented(tmp_path: Path, kinds: None) -> None:
    dev = pki.create_dev_pki(tmp_path / "certs" / "dev")
    policy = load_one(
        tmp_path,
        "kind: ClientTls\nserver_certificate: certs/dev/server.pem\nserver_key: {secret_file: certs/dev/server.key}\n"
        "trust_store: [certs/dev/clients-ca.pem]\ncrls: [certs/dev/clients.crl]\n",
    )
    assert policy.warnings == ()
    ct = ClientTls(policy)

    def context(cert: Path | None, key: Path | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(dev.root_ca)
        if cert is not None:
            ctx.load_cert_chain(cert, key)
        return ctx

    ok, _ = handshake(ct, context(dev.client_cert, dev.client_key))
    assert ok.ok and client_identity(flow_on(ok.client)).uris == ("spiffe://sidegate.dev/client",)  # type: ignore[union-attr]
    revoked, _ = handshake(ct, context(dev.revoked_client_cert, dev.revoked_client_key))
    assert not revoked.ok and revoked.failure["reason"] == "client_cert_revoked"  # type: ignore[index]
    missing, _ = handshake(ct, context(None, None))
    assert not missing.ok
