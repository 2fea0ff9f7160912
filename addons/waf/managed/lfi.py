"""Managed group ``lfi``: path traversal, restricted files and stream wrappers."""

from __future__ import annotations

from typing import Any

from addons.waf.managed.common import ARGS, COOKIES, EVERYWHERE, HEADERS, PATH, PATH_CHAIN, QUERY, alt, rx
from addons.waf.managed.common import DECODE as _WIN

_FILES = alt(
    r"/etc/(?:passwd|shadow|group|gshadow|sudoers|issue|master\.passwd|crontab|ssh/|security/|mysql/my\.cnf)",
    r"/proc/(?:self|thread-self|\d+)/(?:environ|cmdline|maps|mem|fd|cwd|root|exe|status)",
    r"/(?:root|home/[^/\s]+)/\.(?:ssh|bash_history|aws|kube|docker)\b",
    r"\.ssh/(?:id_[a-z0-9]+|authorized_keys|known_hosts)",
    r"[a-z]:[\\/]+(?:windows|winnt)[\\/]+(?:win\.ini|system32|system\.ini|repair)",
    r"(?:^|[\\/])(?:boot|win|system)\.ini\b",
    r"[\\/]inetpub[\\/]",
    r"\bweb-inf[\\/]+web\.xml\b",
    r"/var/(?:log|lib/mysql|run/secrets)/",
    r"/var/www/[^\s]*\.(?:php|env|conf)\b",
    r"/(?:usr/local|opt)/[^\s]*/(?:conf|etc)/[^\s]*\.(?:conf|xml|ini|properties)\b",
    r"\bwp-config\.php\b",
    r"/\.env\b",
    r"\bapplication\.(?:properties|ya?ml)\b.{0,8}$",
)

RULES: list[dict[str, Any]] = [
    rx(
        "waf/lfi-001",
        10,
        "traversal in the URL path: a .. segment (also encoded, double-encoded, %u, ..; and backslash)",
        PATH,
        alt(r"(?:^|[\\/;])\.{2,}(?:[\\/;]|$)", r"(?:^|[\\/])\.\.%00"),
        PATH_CHAIN,
    ),
    rx(
        "waf/lfi-002",
        20,
        "two or more parent-directory steps in a value (../../), any slash",
        [*ARGS, HEADERS],
        r"(?:\.{2,}[\\/]+){2,}|(?:[\\/]\.{2,}){2,}(?:[\\/]|$)",
        _WIN,
    ),
    rx(
        "waf/lfi-003",
        30,
        "one parent-directory step leading to a system or secret file",
        [PATH, *EVERYWHERE],
        r"\.\.[\\/]+(?:[^\s]*[\\/])?(?:etc|proc|windows|winnt|boot\.ini|win\.ini|root|var|usr|home|\.ssh|\.env|\.git|web-inf|inetpub)\b",
        _WIN,
    ),
    rx("waf/lfi-004", 40, "absolute path of a well-known system or secret file", [PATH, *EVERYWHERE], _FILES, _WIN),
    rx(
        "waf/lfi-005",
        50,
        "PHP and archive stream wrappers used for file inclusion",
        [*ARGS, HEADERS],
        r"\b(?:php|phar|zip|expect|glob|zlib|compress\.zlib|compress\.bzip2|rar|ogg|ssh2(?:\.\w+)?)://",
        _WIN,
    ),
    rx(
        "waf/lfi-006",
        60,
        "file inclusion through a NUL-terminated path or a path truncated by many ./",
        [*ARGS, COOKIES, QUERY],
        alt(r"\.\./[^\s]*\x00", r"(?:\./){32,}"),
        _WIN,
    ),
]
