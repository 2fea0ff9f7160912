"""Certificates for mTLS: the development PKI of ``sidegate certs`` and the building blocks tests use.

Concern: client TLS (``kind: ClientTls``), connection checkpoint; no policy file of its own. The
building blocks make every certificate of the verification matrix (RSA and ECDSA leaves, chains
through intermediates with path lengths, expired and not-yet-valid windows, self-signed leaves,
serverAuth-only EKU, a forged issuer name, hostile subjects with CR/LF and quotes) and CRLs in PEM
or DER. Nothing here prints except ``run_certs_command``.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

type KeyType = Literal["rsa", "ec"]
type PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

CLIENT_AUTH = (ExtendedKeyUsageOID.CLIENT_AUTH,)
SERVER_AUTH = (ExtendedKeyUsageOID.SERVER_AUTH,)
CA_DAYS = 3650
LEAF_DAYS = 365  # also the dev CRL's nextUpdate: past it OpenSSL fails with "CRL has expired"
# notBefore slightly in the past so a peer whose clock is a little behind still accepts a fresh cert
CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_URL = "https://localhost:8080/"


@dataclass(frozen=True, slots=True)
class Validity:
    not_before: datetime
    not_after: datetime

    @classmethod
    def days(cls, days: int, *, now: datetime | None = None) -> Validity:
        start = (now or datetime.now(UTC)) - CLOCK_SKEW
        return cls(start, start + CLOCK_SKEW + timedelta(days=days))

    @classmethod
    def expired(cls, *, now: datetime | None = None) -> Validity:
        end = (now or datetime.now(UTC)) - timedelta(days=1)
        return cls(end - timedelta(days=30), end)

    @classmethod
    def not_yet_valid(cls, *, now: datetime | None = None) -> Validity:
        start = (now or datetime.now(UTC)) + timedelta(days=1)
        return cls(start, start + timedelta(days=30))


@dataclass(frozen=True, slots=True)
class Credential:
    """A certificate, its private key, and the intermediates a peer sends after it (never the root)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def full_chain(self) -> tuple[x509.Certificate, ...]:
        return (self.cert, *self.chain)


def generate_key(key_type: KeyType = "ec") -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def x509_name(common_name: str, *, organization: str | None = None, unit: str | None = None) -> x509.Name:
    """A distinguished name. Values are stored as given (UTF8String): CR, LF and quotes included."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if unit is not None:
        attrs.insert(-1, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    return x509.Name(attrs)


def host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """SAN entries for server hosts: IP addresses as iPAddress, everything else as dNSName."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _authority_key_id(issuer: x509.Certificate | None, key: PrivateKey) -> x509.AuthorityKeyIdentifier:
    """The issuer's subject key id, as OpenSSL matches it when looking for a certificate's issuer."""
    try:
        if issuer is not None:
            ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        pass
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())


def issue_certificate(
    subject: str | x509.Name,
    issuer: Credential | None,
    *,
    key_type: KeyType = "ec",
    key: PrivateKey | None = None,
    ca: bool = False,
    path_length: int | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    san: Sequence[x509.GeneralName] = (),
    validity: Validity | None = None,
    serial: int | None = None,
) -> Credential:
    """The general builder: signed by ``issuer``, or self-signed when it is None. ``eku=None`` omits the EKU.

    Issuer name and authority key id come from ``issuer.cert``, the signature from ``issuer.key``;
    pairing a CA's certificate with another key is how ``create_forged_issuer_cert`` forges.
    """
    key = key if key is not None else generate_key(key_type)
    name = subject if isinstance(subject, x509.Name) else x509_name(subject)
    validity = validity or Validity.days(CA_DAYS if ca else LEAF_DAYS)
    signer = key if issuer is None else issuer.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                # RSA key exchange (TLS 1.2 without ECDHE) encrypts to the leaf's key
                key_encipherment=not ca and isinstance(key, rsa.RSAPrivateKey),
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(None if issuer is None else issuer.cert, signer), critical=False)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    # a peer sends the intermediates after its own certificate, never the root
    chain = () if issuer is None or issuer.cert.issuer == issuer.cert.subject else issuer.full_chain
    return Credential(builder.sign(signer, hashes.SHA256()), key, chain)


def create_root_ca(
    subject: str | x509.Name = "sidegate dev root CA",
    *,
    key_type: KeyType = "ec",
    path_length: int | None = None,
    validity: Validity | None = None,
) -> Credential:
    return issue_certificate(subject, None, key_type=key_type, ca=True, path_length=path_length, validity=validity)


def create_intermediate_ca(
    issuer: Credential,
    subject: str | x509.Name = "sidegate dev intermediate CA",
    *,
    path_length: int | None = 0,
    key_type: KeyType = "ec",
    validity: Validity | None = None,
) -> Credential:
    return issue_certificate(subject, issuer, key_type=key_type, ca=True, path_length=path_length, validity=validity)


def create_server_cert(
    issuer: Credential,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    *,
    subject: str | x509.Name | None = None,
    key_type: KeyType = "ec",
    validity: Validity | None = None,
) -> Credential:
    return issue_certificate(
        subject if subject is not None else hosts[0],
        issuer,
        key_type=key_type,
        eku=SERVER_AUTH,
        san=host_names(hosts),
        validity=validity,
    )


def create_client_cert(
    issuer: Credential | None,
    subject: str | x509.Name,
    *,
    uris: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    eku: Sequence[x509.ObjectIdentifier] | None = CLIENT_AUTH,
    key_type: KeyType = "ec",
    validity: Validity | None = None,
    serial: int | None = None,
) -> Credential:
    """A client leaf (``issuer=None``: self-signed). ``eku=SERVER_AUTH`` makes the serverAuth-only case."""
    san = [*(x509.UniformResourceIdentifier(u) for u in uris), *(x509.DNSName(d) for d in dns_names)]
    return issue_certificate(subject, issuer, key_type=key_type, eku=eku, san=san, validity=validity, serial=serial)


def create_forged_issuer_cert(
    impersonated: x509.Certificate,
    subject: str | x509.Name,
    *,
    eku: Sequence[x509.ObjectIdentifier] | None = CLIENT_AUTH,
    key_type: KeyType = "ec",
    validity: Validity | None = None,
) -> Credential:
    """A leaf naming ``impersonated`` as issuer (name and authority key id) but signed by another key.

    Only the signature gives it away: a verifier matching issuers by name or key id alone accepts it.
    """
    forger = Credential(impersonated, generate_key(key_type))
    return issue_certificate(subject, forger, key_type=key_type, eku=eku, validity=validity)


def create_crl(
    issuer: Credential,
    revoked_serials: Iterable[int] = (),
    *,
    last_update: datetime | None = None,
    next_update: datetime | None = None,
    number: int = 1,
) -> x509.CertificateRevocationList:
    now = datetime.now(UTC)
    last_update = last_update or now - CLOCK_SKEW
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(last_update)
        .next_update(next_update or last_update + timedelta(days=LEAF_DAYS))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority_key_id(issuer.cert, issuer.key), critical=False)
    )
    for serial in revoked_serials:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last_update).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(issuer.key, hashes.SHA256())


def crl_bytes(crl: x509.CertificateRevocationList, encoding: Literal["pem", "der"] = "pem") -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM if encoding == "pem" else serialization.Encoding.DER)


def certs_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_file(path: Path, data: bytes, *, mode: int = 0o644, force: bool = False) -> Path:
    """Write with ``mode`` from the first byte (a key is never briefly world-readable); refuse to overwrite."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)  # the umask narrowed the mode given to open, and an overwritten file keeps its own
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def write_certs(path: Path, certs: Iterable[x509.Certificate], *, force: bool = False) -> Path:
    return write_file(path, certs_pem(certs), force=force)


def write_key(path: Path, key: PrivateKey, *, force: bool = False) -> Path:
    return write_file(path, key_pem(key), mode=0o600, force=force)


def write_crls(path: Path, crls: Iterable[x509.CertificateRevocationList], *, force: bool = False) -> Path:
    """One PEM file holding several CRLs, as nginx's ``ssl_crl`` and OpenSSL's ``-CRLfile`` read it."""
    return write_file(path, b"".join(crl_bytes(c) for c in crls), force=force)


@dataclass(frozen=True, slots=True)
class DevPki:
    """Paths written by ``create_dev_pki``.

    ``clients_ca`` trusts the root only: clients send the intermediate themselves (``client.pem``
    holds leaf + intermediate), as ``curl --cert`` does. ``clients_crl`` holds two PEM CRLs, the
    intermediate's (revoking ``client-revoked``) and the root's (empty), because nginx's ``ssl_crl``
    checks every CA of the chain and fails without a CRL for each.
    """

    folder: Path
    root_ca: Path
    intermediate_ca: Path
    clients_ca: Path
    clients_crl: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    revoked_client_cert: Path
    revoked_client_key: Path
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1")

    @classmethod
    def at(cls, folder: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> DevPki:
        f = folder
        return cls(
            f,
            f / "root-ca.pem",
            f / "intermediate-ca.pem",
            f / "clients-ca.pem",
            f / "clients.crl",
            f / "server.pem",
            f / "server.key",
            f / "client.pem",
            f / "client.key",
            f / "client-revoked.pem",
            f / "client-revoked.key",
            tuple(hosts),
        )

    @property
    def files(self) -> tuple[Path, ...]:
        paths = (getattr(self, f.name) for f in fields(self) if f.name not in ("folder", "hosts"))
        return tuple(p for p in paths if isinstance(p, Path))


def create_dev_pki(
    folder: Path, *, hosts: Sequence[str] = ("localhost", "127.0.0.1"), force: bool = False, key_type: KeyType = "ec"
) -> DevPki:
    """Root, intermediate, server and two client certificates plus a CRL, written into ``folder``.

    Raises ``FileExistsError`` naming every existing file, before writing anything, unless ``force``.
    The CA keys are not written: regenerate the whole PKI with ``force=True`` instead.
    """
    pki = DevPki.at(folder, hosts)
    existing = [str(p) for p in pki.files if p.exists()]
    if existing and not force:
        raise FileExistsError(f"refusing to overwrite {', '.join(existing)} (use --force)")
    root = create_root_ca(key_type=key_type)
    inter = create_intermediate_ca(root, key_type=key_type)
    server = create_server_cert(inter, hosts, key_type=key_type)
    client = create_client_cert(inter, "sidegate dev client", uris=["spiffe://sidegate.dev/client"], key_type=key_type)
    revoked = create_client_cert(
        inter, "sidegate dev revoked client", uris=["spiffe://sidegate.dev/revoked"], key_type=key_type
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_certs(pki.root_ca, [root.cert], force=force)
    write_certs(pki.intermediate_ca, [inter.cert], force=force)
    write_certs(pki.clients_ca, [root.cert], force=force)
    write_crls(pki.clients_crl, [create_crl(inter, [revoked.cert.serial_number]), create_crl(root)], force=force)
    for cred, cert_path, key_path in (
        (server, pki.server_cert, pki.server_key),
        (client, pki.client_cert, pki.client_key),
        (revoked, pki.revoked_client_cert, pki.revoked_client_key),
    ):
        write_certs(cert_path, cred.full_chain, force=force)
        write_key(key_path, cred.key, force=force)
    return pki


def run_certs_command(folder: Path, force: bool, *, url: str = DEFAULT_URL) -> int:
    """``sidegate certs``: create the dev PKI, print what was written and how to try it with curl."""
    try:
        pki = create_dev_pki(folder, force=force)
    except OSError as e:  # FileExistsError included
        print(f"sidegate: {e}", file=sys.stderr)
        return 1
    print(f"development PKI written to {pki.folder}/ (not for production; CA keys are not kept)")
    for path, label in (
        (pki.root_ca, "root CA: what clients trust for the server (curl --cacert)"),
        (pki.intermediate_ca, "intermediate CA: issued the server and client certificates"),
        (pki.clients_ca, "client trust store: the root only, clients send the intermediate"),
        (pki.clients_crl, "CRLs of the intermediate (revokes client-revoked) and of the root"),
        (pki.server_cert, f"server certificate + intermediate for {', '.join(pki.hosts)}"),
        (pki.server_key, "server key (0600)"),
        (pki.client_cert, "client certificate + intermediate"),
        (pki.client_key, "client key (0600)"),
        (pki.revoked_client_cert, "revoked client certificate + intermediate"),
        (pki.revoked_client_key, "revoked client key (0600)"),
    ):
        print(f"  {path}  {label}")
    print("try it:")
    print(f"  curl --cert {pki.client_cert} --key {pki.client_key} --cacert {pki.root_ca} {url}")
    return 0
