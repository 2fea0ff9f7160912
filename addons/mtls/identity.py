"""The verified client identity: Envoy's ``x-forwarded-client-cert`` and API Gateway's ``clientCert``.

Checkpoint: integration request (the header), and any plugin that reads the identity. Every value
is derived from client-controlled certificate fields, so every value is escaped into printable
ASCII before it goes near a header: DNs the way OpenSSL prints them with ``-nameopt RFC2253``
(what nginx's ``$ssl_client_s_dn`` and Envoy's ``Subject=`` carry), URIs and DNS names
percent-encoded where a byte could end or split the header, PEM URL-encoded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID, ObjectIdentifier

# OpenSSL's short names, as X509_NAME_print_ex prints them.
_SHORT_NAMES: dict[ObjectIdentifier, str] = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.STREET_ADDRESS: "street",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.TITLE: "title",
    NameOID.INITIALS: "initials",
    NameOID.GENERATION_QUALIFIER: "generationQualifier",
    NameOID.DN_QUALIFIER: "dnQualifier",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.USER_ID: "UID",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC",
    NameOID.JURISDICTION_LOCALITY_NAME: "jurisdictionL",
    NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME: "jurisdictionST",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}
_RFC2253_SPECIAL = frozenset(',+"\\<>;')
# Bytes a URI or DNS value may keep as they are: printable ASCII except the characters that
# delimit or quote XFCC values. Everything else (controls, space, non-ASCII) is percent-encoded.
_URI_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+%=;,")
_NEEDS_QUOTES = frozenset(',;="')


def escape_dn_value(value: str) -> str:
    """One attribute value escaped as OpenSSL's RFC 2253 printing does (ESC_2253|ESC_CTRL|ESC_MSB).

    The result is printable ASCII: control characters and every byte of non-ASCII UTF-8 become
    ``\\XX``; ``, + " \\ < > ;`` get a backslash, as do a leading ``#`` or space and a trailing space.
    """
    out: list[str] = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            out.append(f"\\{code:02X}")
        elif code > 0x7F:
            out.extend(f"\\{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        elif ch in _RFC2253_SPECIAL or (i == 0 and ch in "# ") or (i == last and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _attribute(attr: x509.NameAttribute[str | bytes]) -> str:
    name = _SHORT_NAMES.get(attr.oid, attr.oid.dotted_string)
    value = attr.value if isinstance(attr.value, str) else attr.value.decode("latin-1")
    return f"{name}={escape_dn_value(value)}"


def format_dn(name: x509.Name, *, reverse: bool = True) -> str:
    """The DN as ``openssl x509 -nameopt RFC2253`` prints it (most specific RDN first).

    ``reverse=False`` keeps the certificate's own order (``C=US,O=...,CN=...``), as API Gateway's
    ``subjectDN`` shows it.
    """
    rdns = list(name.rdns)
    if reverse:
        rdns.reverse()
    return ",".join("+".join(_attribute(a) for a in rdn) for rdn in rdns)


def escape_uri(value: str) -> str:
    """A SAN value made header-safe: bytes outside printable ASCII (and ``"``, ``\\``, space) as %XX."""
    out: list[str] = []
    for ch in value:
        if ch in _URI_SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def xfcc_value(value: str) -> str:
    """Envoy's rule: a value holding ``,``, ``;``, ``=`` or ``"`` is double-quoted, ``"`` and ``\\`` escaped."""
    if any(ch in _NEEDS_QUOTES for ch in value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _asn1_time(moment: datetime) -> str:
    """``May 28 12:30:02 2019 GMT``: OpenSSL's ASN1_TIME_print, as API Gateway shows validity."""
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S %Y} GMT"


def serial_colon_hex(serial: int) -> str:
    """``a1:b2:...`` as API Gateway's ``serialNumber`` shows it."""
    text = f"{serial:x}"
    if len(text) % 2:
        text = "0" + text
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2))


def _sans(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return (), ()
    uris = tuple(str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier))
    dns = tuple(str(d) for d in san.get_values_for_type(x509.DNSName))
    return uris, dns


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate that passed verification, and the intermediates it came with.

    After TLS session resumption OpenSSL keeps only the leaf, so ``chain`` is then empty.
    """

    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    resumed: bool = False
    sha256: str = field(init=False)
    subject: str = field(init=False)  # RFC 2253, escaped
    issuer: str = field(init=False)
    uris: tuple[str, ...] = field(init=False)
    dns: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        der = self.cert.public_bytes(serialization.Encoding.DER)
        object.__setattr__(self, "sha256", hashlib.sha256(der).hexdigest())
        object.__setattr__(self, "subject", format_dn(self.cert.subject))
        object.__setattr__(self, "issuer", format_dn(self.cert.issuer))
        uris, dns = _sans(self.cert)
        object.__setattr__(self, "uris", uris)
        object.__setattr__(self, "dns", dns)

    @property
    def serial_hex(self) -> str:
        return f"{self.cert.serial_number:x}"

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def xfcc(self, *, cert: bool = False, chain: bool = False) -> str:
        """One XFCC element: ``Hash=...;Serial=...;Subject="...";URI=...;DNS=...`` (Envoy's keys)."""
        parts = [f"Hash={self.sha256}", f"Serial={self.serial_hex}"]
        if cert:
            parts.append(f'Cert="{quote(self.pem, safe="")}"')
        if chain:
            pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in (self.cert, *self.chain))
            parts.append(f'Chain="{quote(pem, safe="")}"')
        # Envoy always quotes the subject; the RFC 2253 form is ASCII with " and \ already escaped.
        parts.append(f'Subject="{self.subject}"')
        parts.extend(f"URI={xfcc_value(escape_uri(u))}" for u in self.uris)
        parts.extend(f"DNS={xfcc_value(escape_uri(d))}" for d in self.dns)
        return ";".join(parts)

    def client_cert(self) -> dict[str, object]:
        """API Gateway's ``$context.identity.clientCert`` (HTTP APIs: ``requestContext.authentication``)."""
        return {
            "clientCertPem": self.pem,
            "subjectDN": format_dn(self.cert.subject, reverse=False),
            "issuerDN": format_dn(self.cert.issuer, reverse=False),
            "serialNumber": serial_colon_hex(self.cert.serial_number),
            "validity": {
                "notBefore": _asn1_time(self.cert.not_valid_before_utc),
                "notAfter": _asn1_time(self.cert.not_valid_after_utc),
            },
        }

    def summary(self) -> dict[str, object]:
        """Plain data for logs and traces: no PEM, everything escaped."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial_hex,
            "sha256": self.sha256,
            "uris": [escape_uri(u) for u in self.uris],
            "dns": [escape_uri(d) for d in self.dns],
            "resumed": self.resumed,
        }
