"""Policy model of mutual TLS (``kind: ClientTls``, usually ``policies/mtls.yaml``).

Files named in the policy (server certificate and key, trust-store bundles, CRLs) are read and
parsed at load time, so a missing or unreadable file is a policy error at ``file:line`` and the
runtime only holds parsed certificates. Problems that API Gateway reports as truststore warnings
(expired, not-yet-valid or non-CA certificates, weak algorithms, incomplete chains) do not stop
the load: they are collected with the bundle's own ``file:line`` in ``ClientTlsPolicy.warnings``.

```yaml
kind: ClientTls
server_certificate: certs/server.pem        # PEM: leaf first, then the intermediates clients need
server_key: {secret_file: certs/server.key} # or a plain path
trust_store: [certs/clients-ca.pem]         # PEM bundles of trusted CAs (roots)
crls: [certs/clients.crl]                   # PEM (several per file) or DER
verify_depth: 2                             # nginx's ssl_verify_depth: intermediates allowed
client_certificates: required               # required | optional | off
min_tls_version: "1.2"                      # "1.2" | "1.3"
session_timeout: 5m                         # TLS session lifetime (resumption); 0 turns resumption off
hosts:                                      # per-SNI overrides
  public.example.com: {client_certificates: off}
```
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from pydantic import AfterValidator, BeforeValidator, Field, GetCoreSchemaHandler, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from addons.policy.types import POLICY_ROOT, Duration, Mode, PolicyModel, SecretRef

ClientCertificates = Literal["required", "optional", "off"]
TlsVersion = Literal["1.2", "1.3"]

DEFAULT_VERIFY_DEPTH = 2  # API Gateway's longest chain: leaf, two intermediates, root
DEFAULT_SESSION_TIMEOUT = 300.0  # nginx's ssl_session_timeout default; bounds a revoked cert's resumptions
MAX_SESSION_TIMEOUT = 86400.0
DEFAULT_FORWARD_HEADER = "x-forwarded-client-cert"

_PEM_BLOCK = re.compile(r"^-----BEGIN ([A-Z0-9 ]+)-----\s*$")
_HOST = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_WEAK_HASHES = ("md5", "sha1", "sha224")


def _resolve(path: str) -> Path:
    return POLICY_ROOT.get() / path


def _read(path: str, what: str) -> bytes:
    if not isinstance(path, str) or not path:
        raise ValueError(f"expected the path of a {what} file (got {path!r})")
    try:
        return _resolve(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {what} {path} ({e.strerror or type(e).__name__})") from None


def describe_name(name: x509.Name) -> str:
    """A name for messages: RFC 4514 with control characters shown as escapes, never raw."""
    return name.rfc4514_string().encode("ascii", "backslashreplace").decode().replace("\r", "\\r").replace("\n", "\\n")


def _pem_blocks(text: str) -> Iterator[tuple[int, str, str]]:
    """(1-based line of BEGIN, block type, block text) for every PEM block of ``text``."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _PEM_BLOCK.match(lines[i].strip())
        if m is None:
            i += 1
            continue
        kind, start = m.group(1), i
        end_marker = f"-----END {kind}-----"
        while i < len(lines) and lines[i].strip() != end_marker:
            i += 1
        yield start + 1, kind, "\n".join(lines[start : i + 1]) + "\n"
        i += 1


def _key_warning(key: Any) -> str | None:
    """API Gateway's truststore rule: RSA-2048+, ECDSA-256+."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        return f"RSA key of {key.key_size} bits (at least 2048 expected)"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        return f"EC key on {key.curve.name} (at least 256 bits expected)"
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA key (RSA or ECDSA expected)"
    return None


def _hash_name(cert: x509.Certificate) -> str | None:
    try:
        algorithm = cert.signature_hash_algorithm
    except Exception:  # an algorithm cryptography does not know
        return "unknown"
    if algorithm is None:  # Ed25519 / Ed448 sign without a separate hash
        return None
    return algorithm.name


@dataclass(frozen=True, slots=True)
class TrustedCa:
    cert: x509.Certificate
    where: str  # "certs/clients-ca.pem:12"


@dataclass(frozen=True)
class TrustBundle:
    """One PEM bundle of trusted CAs, as written in the policy, with its load-time warnings."""

    path: str
    cas: tuple[TrustedCa, ...]
    warnings: tuple[str, ...] = ()
    file: Path = field(default=Path(), compare=False)

    @classmethod
    def load(cls, value: Any) -> TrustBundle:
        if isinstance(value, TrustBundle):
            return value
        data = _read(value, "trust store")
        text = data.decode("ascii", "replace")
        warnings: list[str] = []
        cas: list[TrustedCa] = []
        seen: set[bytes] = set()
        now = datetime.now(UTC)
        for line, kind, block in _pem_blocks(text):
            where = f"{value}:{line}"
            if kind != "CERTIFICATE":
                what = "a private key: remove it from the trust store" if "PRIVATE KEY" in kind else "ignored"
                warnings.append(f"{where}: {kind} block, not a CERTIFICATE ({what})")
                continue
            try:
                cert = x509.load_pem_x509_certificate(block.encode("ascii", "replace"))
            except ValueError as e:
                warnings.append(f"{where}: not a valid X.509 certificate ({e}); skipped")
                continue
            fingerprint = cert.fingerprint(hashes.SHA256())
            name = describe_name(cert.subject)
            if fingerprint in seen:
                warnings.append(f"{where}: {name!r} appears twice in the trust store")
                continue
            seen.add(fingerprint)
            warnings.extend(f"{where}: {name!r} {problem}" for problem in _ca_problems(cert, now))
            cas.append(TrustedCa(cert, where))
        if not cas:
            raise ValueError(
                f"no PEM certificates in trust store {value} (expected -----BEGIN CERTIFICATE----- blocks)"
            )
        return cls(value, tuple(cas), tuple(warnings), _resolve(value).resolve())

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls.load)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: Any) -> JsonSchemaValue:
        return {"type": "string", "description": "PEM bundle of trusted CA certificates"}


def _ca_problems(cert: x509.Certificate, now: datetime) -> Iterator[str]:
    if cert.not_valid_after_utc < now:
        yield f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC: clients chaining to it are rejected"
    if cert.not_valid_before_utc > now:
        yield f"is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    except ValueError:  # a malformed extension
        is_ca = False
    if not is_ca:
        yield "is not a CA certificate (basicConstraints CA:TRUE missing): OpenSSL will not chain to it"
    digest = _hash_name(cert)
    if digest in _WEAK_HASHES or digest == "unknown":
        yield f"is signed with {digest} (SHA-256 or better expected)"
    try:
        key_problem = _key_warning(cert.public_key())
    except ValueError:
        key_problem = "has a public key cryptography cannot read"
    if key_problem:
        yield f"has a weak or unsupported key: {key_problem}"


@dataclass(frozen=True)
class CrlFile:
    """One CRL file: a DER CRL or a PEM file holding one or more CRLs."""

    path: str
    crls: tuple[x509.CertificateRevocationList, ...]
    warnings: tuple[str, ...] = ()
    file: Path = field(default=Path(), compare=False)

    @classmethod
    def load(cls, value: Any) -> CrlFile:
        if isinstance(value, CrlFile):
            return value
        data = _read(value, "CRL")
        crls: list[tuple[str, x509.CertificateRevocationList]] = []
        warnings: list[str] = []
        if b"-----BEGIN" in data:
            for line, kind, block in _pem_blocks(data.decode("ascii", "replace")):
                where = f"{value}:{line}"
                if kind != "X509 CRL":
                    warnings.append(f"{where}: {kind} block, not an X509 CRL (ignored)")
                    continue
                try:
                    crls.append((where, x509.load_pem_x509_crl(block.encode("ascii", "replace"))))
                except ValueError as e:
                    raise ValueError(f"{where}: not a valid CRL ({e})") from None
            if not crls:
                raise ValueError(f"no CRL in {value} (expected -----BEGIN X509 CRL----- blocks or DER)")
        else:
            try:
                crls.append((value, x509.load_der_x509_crl(data)))
            except ValueError as e:
                raise ValueError(f"{value} is neither a PEM nor a DER CRL ({e})") from None
        now = datetime.now(UTC)
        for where, crl in crls:
            issuer = describe_name(crl.issuer)
            next_update = crl.next_update_utc
            if next_update is not None and next_update < now:
                warnings.append(
                    f"{where}: CRL of {issuer!r} expired on {next_update:%Y-%m-%d %H:%M:%S} UTC: "
                    "every certificate it covers is rejected (CRL has expired)"
                )
            if crl.last_update_utc > now:
                warnings.append(f"{where}: CRL of {issuer!r} is not valid before {crl.last_update_utc:%Y-%m-%d} UTC")
        return cls(value, tuple(c for _, c in crls), tuple(warnings), _resolve(value).resolve())

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls.load)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: Any) -> JsonSchemaValue:
        return {"type": "string", "description": "CRL file: PEM (one or more CRLs) or DER"}


type PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey


@dataclass(frozen=True)
class ServerCertificate:
    """The certificate chain the sidecar presents: leaf first, then intermediates (never sent: the root)."""

    path: str
    chain: tuple[x509.Certificate, ...]
    warnings: tuple[str, ...] = ()
    file: Path = field(default=Path(), compare=False)

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @classmethod
    def load(cls, value: Any) -> ServerCertificate:
        if isinstance(value, ServerCertificate):
            return value
        data = _read(value, "server certificate")
        try:
            chain = tuple(x509.load_pem_x509_certificates(data))
        except ValueError as e:
            raise ValueError(f"{value} is not a PEM certificate chain ({e})") from None
        warnings = []
        now = datetime.now(UTC)
        leaf = chain[0]
        if leaf.not_valid_after_utc < now:
            warnings.append(f"{value}:1: the server certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d} UTC")
        return cls(value, chain, tuple(warnings), _resolve(value).resolve())

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls.load)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: Any) -> JsonSchemaValue:
        return {"type": "string", "description": "PEM file: server certificate, then its intermediates"}


class ServerKey:
    """The server's private key, from a path or a secret reference. Never shown."""

    __slots__ = ("file", "key", "origin")

    def __init__(self, key: PrivateKey, origin: str, file: Path | None) -> None:
        self.key = key
        self.origin = origin  # "file:certs/server.key", "env:NAME": safe to show
        self.file = file

    def __repr__(self) -> str:
        return f"<server key from {self.origin}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerKey) and other.key_der() == self.key_der()

    def __hash__(self) -> int:
        return hash(self.key_der())

    def key_der(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def load(cls, value: Any) -> ServerKey:
        if isinstance(value, ServerKey):
            return value
        if isinstance(value, dict):
            secret = SecretRef.model_validate(value).resolve()
            data, origin, file = secret.reveal().encode(), secret.origin, secret.path
        else:
            data = _read(value, "server key")
            origin, file = f"file:{value}", _resolve(value).resolve()
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            # the message never includes the key material
            raise ValueError(f"the server key from {origin} is not an unencrypted PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise ValueError(f"the server key from {origin} must be RSA, ECDSA or Ed25519")
        return cls(key, origin, file)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls.load)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: Any) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "string", "description": "path of a PEM private key"},
                {"type": "object", "description": "{secret_file: path} or {secret_env: NAME}"},
            ]
        }


def _tls_version(value: Any) -> Any:
    # YAML reads an unquoted 1.2 as a float
    return f"{value:.1f}" if isinstance(value, float) else value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"invalid header name {value!r}")
    return value.lower()


def _host_pattern(value: str) -> str:
    host = value.lower().rstrip(".")
    if not _HOST.match(host):
        raise ValueError(f"expected a host name such as api.example.com or *.example.com (got {value!r})")
    return host


VerifyDepth = Annotated[int, Field(ge=0, le=16)]
HostPattern = Annotated[str, AfterValidator(_host_pattern)]


class HostTls(PolicyModel):
    """Overrides for connections whose SNI names this host; unset fields come from the document."""

    client_certificates: ClientCertificates | None = None
    trust_store: list[TrustBundle] | None = None
    crls: list[CrlFile] | None = None
    verify_depth: VerifyDepth | None = None
    server_certificate: ServerCertificate | None = None
    server_key: ServerKey | None = None

    @model_validator(mode="after")
    def _pair(self) -> HostTls:
        if (self.server_certificate is None) != (self.server_key is None):
            raise ValueError("give server_certificate and server_key together")
        if self.server_certificate is not None and self.server_key is not None:
            _check_key_matches(self.server_certificate, self.server_key)
        return self


def _check_key_matches(cert: ServerCertificate, key: ServerKey) -> None:
    def raw(public: Any) -> bytes:
        return bytes(public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))

    if raw(cert.leaf.public_key()) != raw(key.key.public_key()):
        raise ValueError(f"server_key ({key.origin}) does not belong to the certificate in {cert.path}")


class ClientTlsPolicy(PolicyModel):
    kind: Literal["ClientTls"]
    mode: Mode | None = None
    server_certificate: ServerCertificate = Field(
        description="PEM file the sidecar presents: its certificate first, then the intermediates."
    )
    server_key: ServerKey = Field(description="The server's PEM private key: a path or {secret_file: path}.")
    trust_store: list[TrustBundle] = Field(
        default_factory=list, description="PEM bundles of the CAs client certificates must chain to."
    )
    crls: list[CrlFile] = Field(
        default_factory=list,
        description="CRL files (PEM with one or more CRLs, or DER). With CRLs, every CA of a client's chain, "
        "the root included, needs a current CRL (nginx's ssl_crl, OpenSSL's crl_check_all).",
    )
    verify_depth: VerifyDepth = Field(
        default=DEFAULT_VERIFY_DEPTH,
        description="nginx's ssl_verify_depth: how many intermediates may sit between a client's certificate "
        "and the trusted root (nginx's default is 1).",
    )
    client_certificates: ClientCertificates = Field(
        default="required",
        description="required: no valid certificate, no connection. optional: a certificate is asked for and, "
        "if sent, must be valid. off: none is asked for (TLS only).",
    )
    min_tls_version: Annotated[TlsVersion, BeforeValidator(_tls_version)] = "1.2"
    session_timeout: Annotated[Duration, Field(ge=0, le=MAX_SESSION_TIMEOUT)] = Field(
        default=DEFAULT_SESSION_TIMEOUT,
        description="Lifetime of a TLS session a client may resume without presenting its certificate again; "
        "bounds how long a certificate revoked later keeps working through resumption. 0: no resumption.",
    )
    forward_header: Annotated[str, AfterValidator(_header_name)] = Field(
        default=DEFAULT_FORWARD_HEADER,
        description="Request header carrying the verified identity to the backend (Envoy's XFCC format). "
        "Any copy the client sent is removed.",
    )
    forward_cert: bool = Field(default=False, description="Add Cert= (URL-encoded PEM of the client certificate).")
    forward_chain: bool = Field(default=False, description="Add Chain= (URL-encoded PEM of the chain as sent).")
    hosts: dict[HostPattern, HostTls] = Field(
        default_factory=dict, description="Per-SNI overrides: exact names or *.example.com."
    )

    @field_validator("trust_store", "crls", mode="before")
    @classmethod
    def _list_of_paths(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> ClientTlsPolicy:
        _check_key_matches(self.server_certificate, self.server_key)
        if self.client_certificates != "off" and not self.trust_store:
            raise ValueError(f"client_certificates: {self.client_certificates} needs a trust_store")
        for host, override in self.hosts.items():
            mode = override.client_certificates or self.client_certificates
            if mode != "off" and not (override.trust_store or self.trust_store):
                raise ValueError(f"hosts[{host!r}]: client_certificates: {mode} needs a trust_store")
        return self

    # -- what the runtime and the loader read ----------------------------------------------------

    def settings(self) -> tuple[HostSettings, ...]:
        """The effective settings: the document's own (host None) first, then each host override."""
        out = [
            HostSettings(
                None,
                self.client_certificates,
                tuple(self.trust_store),
                tuple(self.crls),
                self.verify_depth,
                self.server_certificate,
                self.server_key,
            )
        ]
        for host, o in self.hosts.items():
            out.append(
                HostSettings(
                    host,
                    o.client_certificates or self.client_certificates,
                    tuple(o.trust_store if o.trust_store is not None else self.trust_store),
                    tuple(o.crls if o.crls is not None else self.crls),
                    o.verify_depth if o.verify_depth is not None else self.verify_depth,
                    o.server_certificate or self.server_certificate,
                    o.server_key or self.server_key,
                )
            )
        return tuple(out)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Truststore and CRL warnings, each starting with the offending file's ``path:line``."""
        out: dict[str, None] = {}  # ordered, without repeats (hosts share bundles)
        for s in self.settings():
            if s.client_certificates == "off" and s.host is not None:
                continue
            out.update(dict.fromkeys(s.server_certificate.warnings))
            if s.client_certificates == "off":
                continue
            for bundle in s.trust_store:
                out.update(dict.fromkeys(bundle.warnings))
            for crl_file in s.crls:
                out.update(dict.fromkeys(crl_file.warnings))
            out.update(dict.fromkeys(_incomplete_chains(s.trust_store)))
            if s.crls:
                out.update(dict.fromkeys(_cas_without_crl(s.trust_store, s.crls, s.host)))
        return tuple(out)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file this policy read: a change in any of them should reload the policy set."""
        paths: list[Path | None] = []
        for s in self.settings():
            paths += [s.server_certificate.file, s.server_key.file]
            paths += [b.file for b in s.trust_store] + [c.file for c in s.crls]
        return tuple(dict.fromkeys(p for p in paths if p is not None and p != Path()))


@dataclass(frozen=True)
class HostSettings:
    host: str | None  # None: connections without a matching SNI
    client_certificates: ClientCertificates
    trust_store: tuple[TrustBundle, ...]
    crls: tuple[CrlFile, ...]
    verify_depth: int
    server_certificate: ServerCertificate
    server_key: ServerKey


def _incomplete_chains(bundles: tuple[TrustBundle, ...]) -> Iterator[str]:
    """Chains must end at a self-signed root in the trust store (no partial chains, as nginx and
    API Gateway): an intermediate whose issuer is missing anchors nothing."""
    subjects = {ca.cert.subject for bundle in bundles for ca in bundle.cas}
    for bundle in bundles:
        for ca in bundle.cas:
            if ca.cert.issuer != ca.cert.subject and ca.cert.issuer not in subjects:
                yield (
                    f"{ca.where}: {describe_name(ca.cert.subject)!r} is issued by {describe_name(ca.cert.issuer)!r}, "
                    "which is not in the trust store: add the complete chain up to the root"
                )


def _cas_without_crl(
    bundles: tuple[TrustBundle, ...], crl_files: tuple[CrlFile, ...], host: str | None
) -> Iterator[str]:
    """With CRLs configured OpenSSL checks every CA of the chain (crl_check_all): one without a CRL
    fails every client under it with "unable to get certificate CRL"."""
    issuers = {crl.issuer for f in crl_files for crl in f.crls}
    for bundle in bundles:
        for ca in bundle.cas:
            if ca.cert.subject not in issuers:
                scope = f" (hosts[{host!r}])" if host else ""
                yield (
                    f"{ca.where}: {describe_name(ca.cert.subject)!r} has no CRL among the crls{scope}: "
                    "every client certificate chaining to it is rejected (unable to get certificate CRL)"
                )
