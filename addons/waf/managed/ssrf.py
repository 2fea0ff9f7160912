"""Managed group ``ssrf``: URLs pointing the server at itself, its network or its cloud metadata.

Hosts are recognised in every spelling a URL parser accepts: decimal (``2130706433``), hex
(``0x7f000001``, ``0x7f.1``), octal (``0177.0.0.1``), short (``127.1``), IPv6 loopback, mapped and
unique-local forms, and names that resolve there (``localhost``, ``*.localhost``, wildcard DNS
services). Referer and Origin are left out: they name the page the browser was on, which the
server never fetches (a developer's page on ``localhost:3000`` is normal).
"""

from __future__ import annotations

from typing import Any

from addons.waf.managed.common import BODY, COOKIES, DECODE, QUERY, SEGMENTS, alt, rx

_FIELDS: list[Any] = [
    SEGMENTS,
    QUERY,
    COOKIES,
    BODY,
    {"all_headers": {"exclude": ["cookie", "referer", "origin", "host"]}},
]
_CHAIN = DECODE
# scheme://[userinfo@] (also scheme-relative //, and backslashes some parsers accept as slashes)
_AUTHORITY = r"(?:\b[a-z][a-z0-9+.-]{1,15}:)?(?:/|\\){2}(?:[^/\\\s@?#]*@)?"
_END = r"(?:[:/\\?#\]\s\"'<>,;]|$)"

_LOOPBACK = alt(
    r"localhost(?:\.localdomain)?\.?",
    r"[a-z0-9.-]+\.localhost",
    r"127(?:\.\d{1,3}){0,3}",
    r"0+(?:\.0+){0,3}",
    r"0x0*7f(?:\.[0-9a-fx]+){0,3}|0x0*7f[0-9a-f]{6}",
    r"0+177(?:\.[0-7x]+){0,3}",
    r"0*2130706433",
    r"0*17700000001",
    r"\[(?:0*:)*:?0*1\]",
    r"\[(?:0*:)*:?\]",
    r"\[(?:0*:)*:?ffff:(?:127\.[\d.]+|7f[0-9a-f]{2}:[0-9a-f]{1,4})\]",
    r"\[(?:0*:)*:?(?:127\.[\d.]+|7f[0-9a-f]{2}:[0-9a-f]{1,4})\]",
)
_METADATA = alt(
    r"169\.254\.169\.254",
    r"0*2852039166",
    r"0x0*a9fea9fe",
    r"0x0*a9\.0x0*fe\.0x0*a9\.0x0*fe",
    r"0*251\.0*376\.0*251\.0*376",
    r"169\.254\.43518",
    r"169\.16689662",
    r"\[(?:0*:)*:?ffff:(?:169\.254\.169\.254|a9fe:a9fe)\]",
    r"\[fd00:ec2::254\]",
    r"169\.254\.170\.2",
    r"100\.100\.100\.200",
    r"metadata\.google\.internal",
    r"metadata\.goog",
    r"metadata",
    r"instance-data(?:\.ec2\.internal)?",
    r"169\.254\.169\.123",
)
_PRIVATE = alt(
    r"10(?:\.\d{1,3}){3}",
    r"172\.(?:1[6-9]|2\d|3[01])(?:\.\d{1,3}){2}",
    r"192\.168(?:\.\d{1,3}){2}",
    r"169\.254(?:\.\d{1,3}){2}",
    r"100\.(?:6[4-9]|[7-9]\d|1[01]\d|12[0-7])(?:\.\d{1,3}){2}",
    r"\[f[cd][0-9a-f]{0,2}:[0-9a-f:.]*\]",
    r"\[fe[89ab][0-9a-f]?:[0-9a-f:.]*\]",
    r"\[(?:0*:)*:?ffff:(?:10|192\.168|172\.(?:1[6-9]|2\d|3[01]))\.[\d.]+\]",
)
# Any host spelled as a number that is not a plain dotted quad: never a real site.
_OBFUSCATED = alt(
    r"0x[0-9a-f]+(?:\.[0-9a-fx]+){0,3}", r"0[0-7]+(?:\.[0-7x]+){1,3}", r"\d{8,10}", r"\d{1,3}(?:\.\d{1,3}){1,2}"
)


def _host(hosts: str) -> str:
    return rf"{_AUTHORITY}(?:{hosts}){_END}"


RULES: list[dict[str, Any]] = [
    rx(
        "waf/ssrf-001",
        10,
        "URL whose host is this machine: localhost, 127/8, 0.0.0.0, ::1 in any spelling",
        _FIELDS,
        _host(_LOOPBACK),
        _CHAIN,
    ),
    rx(
        "waf/ssrf-002",
        20,
        "URL whose host is a cloud metadata service (AWS, ECS, GCP, Azure, Alibaba) in any spelling",
        _FIELDS,
        _host(_METADATA),
        _CHAIN,
    ),
    rx(
        "waf/ssrf-003",
        30,
        "the metadata address or name anywhere in a value, even without a scheme",
        _FIELDS,
        alt(
            r"\b169\.254\.169\.254\b",
            r"\bmetadata\.google\.internal\b",
            r"\bfd00:ec2::254\b",
            r"/latest/meta-data\b",
            r"/computemetadata/v1\b",
            r"/metadata/instance\?api-version",
        ),
        _CHAIN,
    ),
    rx(
        "waf/ssrf-004",
        40,
        "URL whose host is a private, carrier-grade NAT or link-local network (IPv4 or IPv6)",
        _FIELDS,
        _host(_PRIVATE),
        _CHAIN,
    ),
    rx(
        "waf/ssrf-005",
        50,
        "URL whose host is an IP address in hex, octal, decimal or short form",
        _FIELDS,
        _host(_OBFUSCATED),
        _CHAIN,
    ),
    rx(
        "waf/ssrf-006",
        60,
        "URL schemes that let a fetcher talk to arbitrary services or files",
        _FIELDS,
        r"\b(?:gopher|dict|file|tftp|ldaps?|jar|netdoc|telnet|smb|rmi|iiop)://",
        _CHAIN,
    ),
    rx(
        "waf/ssrf-007",
        70,
        "userinfo and fragment tricks that make parsers disagree about the host",
        _FIELDS,
        alt(
            r"\b[a-z][a-z0-9+.-]{1,15}://(?:[a-z0-9-]+\.)+(?:com|net|org|io|dev|co|app|cloud|internal|local|gov|edu|aws)(?::\d*)?@",
            r"\b[a-z][a-z0-9+.-]{1,15}://[^\s/@]*[#\\][^\s/]*@",
            r"\b[a-z][a-z0-9+.-]{1,15}://[^/\s@]*@[^/\s@]*@",
        ),
        _CHAIN,
    ),
    rx(
        "waf/ssrf-009",
        75,
        "host-override headers (X-Forwarded-Host and kin) naming this machine, metadata or a private address",
        {
            "all_headers": {
                "include": [
                    "x-forwarded-host",
                    "x-host",
                    "x-forwarded-server",
                    "x-original-host",
                    "x-http-host-override",
                ]
            }
        },
        rf"^\s*(?:{_LOOPBACK}|{_METADATA}|{_PRIVATE})(?::\d+)?\s*$",
        _CHAIN,
    ),
    rx(
        "waf/ssrf-008",
        80,
        "hosts that resolve to any address on demand (wildcard DNS) or out-of-band callback services",
        _FIELDS,
        alt(
            r"(?:^|[./@])(?:\d{1,3}[.-]){3}\d{1,3}\.(?:nip|xip|sslip)\.io\b",
            r"\.(?:nip|xip|sslip)\.io\b",
            r"\blocaltest\.me\b",
            r"\blvh\.me\b",
            r"\b(?:[a-z0-9-]+\.)*(?:burpcollaborator\.net|oastify\.com|interact\.sh|oast\.(?:pro|live|site|online|fun|me)|requestbin\.net|dnslog\.cn|ceye\.io|canarytokens\.com)\b",
            r"\b1u\.ms\b",
            r"\brebind\.(?:it|network)\b",
        ),
        _CHAIN,
    ),
]
