"""The development PKI (``sidegate certs``) and the certificate building blocks of the mTLS tests.

Certificates are checked by two independent verifiers: ``openssl verify`` (the OpenSSL that nginx
and sidegate's handshake use) and cryptography's own X.509 path validation.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from addons import pki
from addons.pki import (
    SERVER_AUTH,
    Credential,
    DevPki,
    Validity,
    create_client_cert,
    create_crl,
    create_dev_pki,
    create_forged_issuer_cert,
    create_intermediate_ca,
    create_root_ca,
    create_server_cert,
    crl_bytes,
    run_certs_command,
    write_certs,
    write_crls,
    write_key,
)

HOSTILE_CN = 'evil\r\nx-forwarded-client-cert: Hash=00;Subject="CN=admin"\r\n'


def openssl_verify(tmp: Path, leaf: x509.Certificate, *args: str | Path) -> tuple[int, str]:
    """``openssl verify`` of one leaf; returns (exit code, combined output)."""
    leaf_file = write_certs(tmp / f"leaf-{leaf.serial_number:x}.pem", [leaf], force=True)
    proc = subprocess.run(["openssl", "verify", *map(str, args), str(leaf_file)], capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def verify_against(tmp: Path, root: Credential, leaf: Credential, *args: str | Path) -> tuple[int, str]:
    """Trust ``root``; the intermediates the leaf carries are untrusted, as a TLS client sends them."""
    ca = write_certs(tmp / "ca.pem", [root.cert], force=True)
    untrusted: list[str | Path] = []
    if leaf.chain:
        untrusted = ["-untrusted", write_certs(tmp / "untrusted.pem", leaf.chain, force=True)]
    return openssl_verify(tmp, leaf.cert, "-CAfile", ca, *untrusted, *args)


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def root() -> Credential:
    return create_root_ca("test root CA")


@pytest.fixture(scope="module")
def intermediate(root: Credential) -> Credential:
    return create_intermediate_ca(root, "test intermediate CA")


@pytest.fixture
def dev(tmp_path: Path) -> DevPki:
    return create_dev_pki(tmp_path / "dev")


# -- the development PKI ------------------------------------------------------------------------


def test_dev_client_verifies_against_bundle_with_intermediate_untrusted(dev: DevPki, tmp_path: Path) -> None:
    leaf, *sent = load_chain(dev.client_cert)
    assert [c.subject for c in sent] == [load_chain(dev.intermediate_ca)[0].subject]
    code, out = openssl_verify(
        tmp_path, leaf, "-CAfile", dev.clients_ca, "-untrusted", dev.intermediate_ca, "-purpose", "sslclient"
    )
    assert code == 0, out

    verifier = PolicyBuilder().store(Store(load_chain(dev.clients_ca))).build_client_verifier()
    verified = verifier.verify(leaf, sent)
    assert [c.subject for c in verified.chain] == [
        leaf.subject,
        sent[0].subject,
        load_chain(dev.root_ca)[0].subject,
    ]
    assert verified.subjects == [x509.UniformResourceIdentifier("spiffe://sidegate.dev/client")]


def test_dev_bundle_trusts_only_the_root(dev: DevPki, tmp_path: Path) -> None:
    bundle = load_chain(dev.clients_ca)
    assert bundle == load_chain(dev.root_ca)
    leaf = load_chain(dev.client_cert)[0]
    code, out = openssl_verify(tmp_path, leaf, "-CAfile", dev.clients_ca)  # intermediate not sent
    assert code != 0
    assert "unable to get local issuer certificate" in out


def test_dev_revoked_client_fails_crl_check(dev: DevPki, tmp_path: Path) -> None:
    common = ("-CAfile", dev.clients_ca, "-untrusted", dev.intermediate_ca, "-CRLfile", dev.clients_crl)
    revoked = load_chain(dev.revoked_client_cert)[0]
    good = load_chain(dev.client_cert)[0]
    for flag in ("-crl_check", "-crl_check_all"):
        code, out = openssl_verify(tmp_path, revoked, *common, flag)
        assert code != 0
        assert "certificate revoked" in out
        code, out = openssl_verify(tmp_path, good, *common, flag)
        assert code == 0, out


def test_dev_crl_file_holds_one_crl_per_ca(dev: DevPki) -> None:
    root, inter = load_chain(dev.root_ca)[0], load_chain(dev.intermediate_ca)[0]
    revoked = load_chain(dev.revoked_client_cert)[0]
    text = dev.clients_crl.read_bytes()
    crls = [
        x509.load_pem_x509_crl(b"-----BEGIN X509 CRL-----" + part)
        for part in text.split(b"-----BEGIN X509 CRL-----")[1:]
    ]
    by_issuer = {crl.issuer: crl for crl in crls}
    assert set(by_issuer) == {root.subject, inter.subject}
    assert by_issuer[inter.subject].is_signature_valid(inter.public_key())  # type: ignore[arg-type]
    assert by_issuer[root.subject].is_signature_valid(root.public_key())  # type: ignore[arg-type]
    assert [r.serial_number for r in by_issuer[inter.subject]] == [revoked.serial_number]
    assert len(by_issuer[root.subject]) == 0


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_dev_server_cert_verifies_for_localhost_and_loopback_ip(dev: DevPki, tmp_path: Path, host: str) -> None:
    leaf, *sent = load_chain(dev.server_cert)
    flag = "-verify_ip" if host[0].isdigit() else "-verify_hostname"
    code, out = openssl_verify(
        tmp_path, leaf, "-CAfile", dev.root_ca, "-untrusted", dev.server_cert, "-purpose", "sslserver", flag, host
    )
    assert code == 0, out

    subject: x509.verification.Subject = (
        x509.IPAddress(ipaddress.ip_address(host)) if host[0].isdigit() else x509.DNSName(host)
    )
    verifier = PolicyBuilder().store(Store(load_chain(dev.root_ca))).build_server_verifier(subject)
    assert len(verifier.verify(leaf, sent)) == 3


def test_dev_server_cert_does_not_verify_for_another_name(dev: DevPki, tmp_path: Path) -> None:
    leaf, *sent = load_chain(dev.server_cert)
    code, out = openssl_verify(
        tmp_path, leaf, "-CAfile", dev.root_ca, "-untrusted", dev.server_cert, "-verify_hostname", "example.com"
    )
    assert code != 0
    assert "hostname mismatch" in out
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store(load_chain(dev.root_ca))).build_server_verifier(x509.DNSName("example.com")).verify(
            leaf, sent
        )


def test_dev_pki_file_permissions(tmp_path: Path) -> None:
    old = os.umask(0o000)  # even a permissive umask must not leave keys readable by others
    try:
        dev = create_dev_pki(tmp_path / "dev")
    finally:
        os.umask(old)
    keys = {dev.server_key, dev.client_key, dev.revoked_client_key}
    assert {p.name for p in dev.folder.iterdir()} == {p.name for p in dev.files}
    for path in dev.files:
        assert mode(path) == (0o600 if path in keys else 0o644), path
    for key in keys:
        assert b"PRIVATE KEY" in key.read_bytes()
    for path in set(dev.files) - keys:
        assert b"PRIVATE KEY" not in path.read_bytes()  # no CA keys anywhere


def test_dev_pki_keys_match_their_certificates(dev: DevPki) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    for cert_path, key_path in [
        (dev.server_cert, dev.server_key),
        (dev.client_cert, dev.client_key),
        (dev.revoked_client_cert, dev.revoked_client_key),
    ]:
        key = load_pem_private_key(key_path.read_bytes(), password=None)
        assert load_chain(cert_path)[0].public_key() == key.public_key()


def test_dev_pki_refuses_to_overwrite(dev: DevPki) -> None:
    before = {p: p.read_bytes() for p in dev.files}
    with pytest.raises(FileExistsError, match=r"refusing to overwrite .*client\.key"):
        create_dev_pki(dev.folder)
    assert {p: p.read_bytes() for p in dev.files} == before


def test_dev_pki_refuses_before_writing_anything(tmp_path: Path) -> None:
    (tmp_path / "client.key").write_text("mine")
    with pytest.raises(FileExistsError, match=r"client\.key"):
        create_dev_pki(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["client.key"]
    assert (tmp_path / "client.key").read_text() == "mine"


def test_dev_pki_force_regenerates_and_tightens_key_modes(dev: DevPki) -> None:
    before = dev.client_cert.read_bytes()
    dev.client_key.chmod(0o644)
    again = create_dev_pki(dev.folder, force=True)
    assert again == dev
    assert dev.client_cert.read_bytes() != before
    assert mode(dev.client_key) == 0o600


def test_dev_pki_with_rsa_keys_and_custom_hosts(tmp_path: Path) -> None:
    dev = create_dev_pki(tmp_path, hosts=("sidecar.test", "::1"), key_type="rsa")
    leaf = load_chain(dev.server_cert)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["sidecar.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)


def test_run_certs_command_prints_curl_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "certs" / "dev"
    assert run_certs_command(folder, force=False) == 0
    out = capsys.readouterr().out
    assert f"curl --cert {folder / 'client.pem'} --key {folder / 'client.key'} --cacert {folder / 'root-ca.pem'}" in out

    assert run_certs_command(folder, force=False) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "refusing to overwrite" in captured.err
    assert run_certs_command(folder, force=True) == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_dev_pki_works_with_curl_against_an_openssl_server(dev: DevPki, tmp_path: Path) -> None:
    # s_server's -CRL reads only the first CRL of a file; its -CAfile reads certificates and every CRL
    trust = tmp_path / "trust.pem"
    trust.write_bytes(dev.clients_ca.read_bytes() + dev.clients_crl.read_bytes())
    port = free_port()
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            str(dev.server_cert),
            "-cert_chain",
            str(dev.intermediate_ca),
            "-key",
            str(dev.server_key),
            "-CAfile",
            str(trust),
            "-Verify",
            "2",
            "-verify_return_error",
            "-crl_check_all",
            "-www",
            "-quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "openssl s_server did not start"
                time.sleep(0.05)

        def curl(host: str, *cert: Path) -> int:
            args = ["--cert", str(cert[0]), "--key", str(cert[1])] if cert else []
            url = f"https://{host}:{port}/"
            cmd = ["curl", "-sS", "-o", os.devnull, "--max-time", "10", *args, "--cacert", str(dev.root_ca), url]
            return subprocess.run(cmd, capture_output=True).returncode

        assert curl("localhost", dev.client_cert, dev.client_key) == 0
        assert curl("127.0.0.1", dev.client_cert, dev.client_key) == 0
        assert curl("localhost", dev.revoked_client_cert, dev.revoked_client_key) != 0
        assert curl("localhost") != 0
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_create_dev_pki_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create_dev_pki(tmp_path)
    assert capsys.readouterr() == ("", "")


# -- building blocks ----------------------------------------------------------------------------


@pytest.mark.parametrize(("key_type", "key_class"), [("rsa", rsa.RSAPublicKey), ("ec", ec.EllipticCurvePublicKey)])
@pytest.mark.parametrize("through_intermediate", [False, True])
def test_valid_client_leaf_verifies(
    tmp_path: Path,
    root: Credential,
    intermediate: Credential,
    key_type: pki.KeyType,
    key_class: type,
    through_intermediate: bool,
) -> None:
    issuer = intermediate if through_intermediate else root
    leaf = create_client_cert(issuer, "client", dns_names=["client.test"], key_type=key_type)
    public = leaf.cert.public_key()
    assert isinstance(public, key_class)
    if isinstance(public, rsa.RSAPublicKey):
        assert public.key_size == 2048
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == "secp256r1"
    assert leaf.chain == ((intermediate.cert,) if through_intermediate else ())
    code, out = verify_against(tmp_path, root, leaf, "-purpose", "sslclient")
    assert code == 0, out
    PolicyBuilder().store(Store([root.cert])).build_client_verifier().verify(leaf.cert, list(leaf.chain))


@pytest.mark.parametrize(
    ("validity", "error"),
    [
        (Validity.expired(), "certificate has expired"),
        (Validity.not_yet_valid(), "certificate is not yet valid"),
    ],
)
def test_validity_windows_are_enforced(tmp_path: Path, root: Credential, validity: Validity, error: str) -> None:
    leaf = create_client_cert(root, "client", validity=validity)
    code, out = verify_against(tmp_path, root, leaf)
    assert code != 0
    assert error in out


def test_server_auth_only_leaf_is_rejected_as_client(tmp_path: Path, root: Credential) -> None:
    leaf = create_client_cert(root, "server-ish", eku=SERVER_AUTH, dns_names=["server.test"])
    code, out = verify_against(tmp_path, root, leaf, "-purpose", "sslclient")
    assert code != 0
    assert "error 26 at 0 depth" in out  # X509_V_ERR_INVALID_PURPOSE, "unsuitable certificate purpose"
    code, out = verify_against(tmp_path, root, leaf, "-purpose", "sslserver")
    assert code == 0, out
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([root.cert])).build_client_verifier().verify(leaf.cert, [])


def test_leaf_without_eku_is_accepted_as_client(tmp_path: Path, root: Credential) -> None:
    leaf = create_client_cert(root, "no-eku", eku=None)
    with pytest.raises(x509.ExtensionNotFound):
        leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    code, out = verify_against(tmp_path, root, leaf, "-purpose", "sslclient")
    assert code == 0, out


def test_forged_issuer_name_fails_on_the_signature(tmp_path: Path, root: Credential) -> None:
    forged = create_forged_issuer_cert(root.cert, "forged client")
    assert forged.cert.issuer == root.cert.subject
    aki = forged.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    code, out = verify_against(tmp_path, root, forged, "-purpose", "sslclient")
    assert code != 0
    assert "certificate signature failure" in out
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([root.cert])).build_client_verifier().verify(forged.cert, [])


def test_self_signed_leaf_is_not_trusted(tmp_path: Path, root: Credential) -> None:
    leaf = create_client_cert(None, "self")
    assert leaf.cert.issuer == leaf.cert.subject
    assert leaf.chain == ()
    code, out = verify_against(tmp_path, root, leaf)
    assert code != 0
    assert "self-signed certificate" in out or "self signed certificate" in out


def test_untrusted_ca_is_rejected_with_and_without_its_chain(tmp_path: Path, root: Credential) -> None:
    other_root = create_root_ca("other root")
    leaf = create_client_cert(create_intermediate_ca(other_root, "other intermediate"), "stranger")
    code, out = verify_against(tmp_path, root, leaf)
    assert code != 0
    assert "unable to get local issuer certificate" in out
    with_root = Credential(leaf.cert, leaf.key, (*leaf.chain, other_root.cert))
    code, out = verify_against(tmp_path, root, with_root)
    assert code != 0
    assert (
        "self-signed certificate in certificate chain" in out or "self signed certificate in certificate chain" in out
    )


@pytest.mark.parametrize(("path_length", "ok"), [(1, True), (0, False)])
def test_intermediate_path_length_is_enforced(tmp_path: Path, root: Credential, path_length: int, ok: bool) -> None:
    upper = create_intermediate_ca(root, "upper", path_length=path_length)
    lower = create_intermediate_ca(upper, "lower", path_length=0)
    leaf = create_client_cert(lower, "deep client")
    assert leaf.chain == (lower.cert, upper.cert)
    code, out = verify_against(tmp_path, root, leaf)
    assert (code == 0) is ok, out
    if not ok:
        assert "path length constraint exceeded" in out


def test_verify_depth_counts_intermediates_only(tmp_path: Path, root: Credential) -> None:
    # OpenSSL's depth (nginx's ssl_verify_depth) counts neither the leaf nor the trust anchor:
    # depth 2 admits leaf + 2 intermediates + root, depth 1 does not
    upper = create_intermediate_ca(root, "upper", path_length=1)
    leaf = create_client_cert(create_intermediate_ca(upper, "lower"), "deep client")
    code, out = verify_against(tmp_path, root, leaf, "-verify_depth", "2")
    assert code == 0, out
    code, out = verify_against(tmp_path, root, leaf, "-verify_depth", "1")
    assert code != 0
    assert "certificate chain too long" in out


def test_hostile_subject_is_encoded_and_parses_back(tmp_path: Path, root: Credential) -> None:
    subject = pki.x509_name(HOSTILE_CN, organization='Quote "Co", Ltd\n', unit="a\\b;c=d")
    leaf = create_client_cert(root, subject)
    path = write_certs(tmp_path / "hostile.pem", leaf.full_chain)
    parsed = load_chain(path)[0]
    assert parsed.subject == subject
    assert parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HOSTILE_CN
    assert parsed.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == 'Quote "Co", Ltd\n'
    assert b"\r\nx-forwarded-client-cert" in leaf.cert.tbs_certificate_bytes  # raw bytes, not escaped at issuance
    proc = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-subject", "-nameopt", "RFC2253"], capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    assert b"\r" not in proc.stdout.rstrip(b"\n")  # openssl escapes control characters when it prints them
    code, out = verify_against(tmp_path, root, leaf, "-purpose", "sslclient")
    assert code == 0, out


@pytest.mark.parametrize("encoding", ["pem", "der"])
def test_crl_revokes_given_serials_in_both_encodings(root: Credential, tmp_path: Path, encoding: str) -> None:
    crl = create_crl(root, [5, 7], number=3)
    data = crl_bytes(crl, "pem" if encoding == "pem" else "der")
    loaded = x509.load_pem_x509_crl(data) if encoding == "pem" else x509.load_der_x509_crl(data)
    assert loaded.is_signature_valid(root.cert.public_key())  # type: ignore[arg-type]
    assert sorted(r.serial_number for r in loaded) == [5, 7]
    assert loaded.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    path = tmp_path / f"root.crl.{encoding}"
    path.write_bytes(data)
    proc = subprocess.run(
        ["openssl", "crl", "-inform", encoding.upper(), "-in", str(path), "-noout", "-text"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Serial Number: 05" in proc.stdout


def test_revoked_intermediate_fails_crl_check_all(tmp_path: Path, root: Credential, intermediate: Credential) -> None:
    leaf = create_client_cert(intermediate, "client")
    crls = write_crls(
        tmp_path / "crls.pem", [create_crl(root, [intermediate.cert.serial_number]), create_crl(intermediate)]
    )
    code, out = verify_against(tmp_path, root, leaf, "-crl_check", "-CRLfile", crls)
    assert code == 0, out  # -crl_check only looks at the leaf
    code, out = verify_against(tmp_path, root, leaf, "-crl_check_all", "-CRLfile", crls)
    assert code != 0
    assert "certificate revoked" in out


def test_write_key_is_private_and_write_refuses_to_overwrite(tmp_path: Path, root: Credential) -> None:
    path = write_key(tmp_path / "k.pem", root.key)
    assert mode(path) == 0o600
    with pytest.raises(FileExistsError):
        write_key(path, root.key)
    with pytest.raises(FileExistsError):
        write_certs(path, [root.cert])
    write_certs(path, [root.cert], force=True)
    assert mode(path) == 0o644
    assert load_chain(path) == [root.cert]


def test_server_cert_sans_and_eku(intermediate: Credential) -> None:
    server = create_server_cert(intermediate, ["api.test", "10.0.0.1"])
    san = server.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
    assert list(server.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == list(SERVER_AUTH)
    assert server.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "api.test"


def test_sidegate_certs_command_creates_the_dev_pki(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "addons.cli", "certs", str(tmp_path / "dev")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "curl --cert" in result.stdout
    assert (tmp_path / "dev" / "client.pem").is_file() and (tmp_path / "dev" / "clients.crl").is_file()
    again = subprocess.run(
        [sys.executable, "-m", "addons.cli", "certs", str(tmp_path / "dev")], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1
