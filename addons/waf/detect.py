"""SQL injection and XSS detection: libinjection (libinjection-python), plus a few checks of ours.

libinjection tokenises the input the way a SQL parser or an HTML tokenizer would and matches the
token fingerprint against its list of known attack shapes, so it needs no keyword lists and has
few false positives on prose. Results are cached per distinct value (bounded): the same User-Agent
or Accept header comes back on every request of a client.
"""

from __future__ import annotations

import functools
import re
from typing import Any, cast

import libinjection  # type: ignore[import-not-found, unused-ignore]

CACHE_SIZE = 16384
CACHE_MAX_LEN = 512  # longer values are checked every time rather than held in the cache

# A value made only of ASCII letters, digits and underscores has no token boundary, so neither
# detector can find an attack in it (checked against libinjection on random strings).
_PLAIN = re.compile(r"[A-Za-z0-9_]*|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")

# HIGH sensitivity adds shapes libinjection leaves alone because prose uses them too.
_SQLI_HIGH = re.compile(
    r"(?i)(?:'|\")\s*(?:or|and|\|\||&&)\s+[\w'\"(]|\b(?:or|and)\s+\d+\s*(?:=|<|>|like)\s*\d+"
    r"|;\s*(?:select|insert|update|delete|drop|alter|create|exec|shutdown|declare)\b"
    r"|\bunion\b.{0,40}\bselect\b|/\*!?\d*|--\s*$|#\s*$"
)
# A value that *is* a whole SQL statement (a query builder's text, a snippet in a comment) is not
# an injection, which has to break out of a literal or extend a clause; LOW sensitivity leaves it
# to the explicit shapes of the managed sqli group (UNION extraction, SLEEP, stacked statements).
_STATEMENT = re.compile(r"\s*(?:select|with|insert|update|delete|create|alter|show|explain|describe)\b", re.IGNORECASE)
# Style attributes with plain CSS (rich-text editors emit them) are not script: libinjection's
# XSS check flags any style attribute, so a value it flags is checked again with them removed.
# Plain: no markup or escapes, and no function but colours and sizes (rgb(), calc()...):
# url(), expression() and the like stay.
_CSS_FUNCTION = r"(?:rgba?|hsla?|calc|var|min|max|clamp)\("
_PLAIN_STYLE = re.compile(
    rf"""\sstyle\s*=\s*(?:"(?:[^"<>\\(]|{_CSS_FUNCTION})*"|'(?:[^'<>\\(]|{_CSS_FUNCTION})*')""",
    re.IGNORECASE,
)
# ... and so is an https iframe with layout attributes only (a video or map embed from an editor):
# no script URL, srcdoc or event handler, which stay.
_EMBED = re.compile(
    r"""<iframe(?:\s+(?:src\s*=\s*["']https://[^"'<>\s]+["']|(?:width|height|frameborder|title|loading"""
    r"""|referrerpolicy|allow)\s*=\s*["'][^"'<>]*["']|allowfullscreen))+\s*/?>(?:\s*</iframe\s*>)?""",
    re.IGNORECASE,
)
# ... and so are document-level tags of a complete HTML document (an email template).
_DOCUMENT_TAGS = re.compile(
    r"<!doctype\s+html\s*>|<meta\s+(?:charset|name)\s*=\s*[\"'][^\"'<>]*[\"'][^<>]*?>", re.IGNORECASE
)


def _raw_sqli(text: str) -> bool:
    result = cast(dict[str, Any], libinjection.is_sql_injection(text))
    return bool(result["is_sqli"])


def _raw_xss(text: str) -> bool:
    result = cast(dict[str, Any], libinjection.is_xss(text))
    if not result["is_xss"]:
        return False
    lowered = text.lower()
    if "style" in lowered or "<meta" in lowered or "<!doctype" in lowered or "<iframe" in lowered:
        stripped = _EMBED.sub(" ", _DOCUMENT_TAGS.sub(" ", _PLAIN_STYLE.sub(" ", text)))
        if "http-equiv" not in lowered and stripped != text:
            return bool(cast(dict[str, Any], libinjection.is_xss(stripped))["is_xss"])
    return True


@functools.lru_cache(maxsize=CACHE_SIZE)
def _cached_sqli(text: str) -> bool:
    return _raw_sqli(text)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _cached_xss(text: str) -> bool:
    return _raw_xss(text)


def is_sqli(text: str, *, high: bool = False) -> bool:
    if _PLAIN.fullmatch(text) or (not high and _STATEMENT.match(text)):
        return False
    hit = _cached_sqli(text) if len(text) <= CACHE_MAX_LEN else _raw_sqli(text)
    return hit or (high and _SQLI_HIGH.search(text) is not None)


def is_xss(text: str) -> bool:
    # libinjection's XSS check needs a tag or an attribute assignment (checked on random token soup)
    if ("<" not in text and "=" not in text) or _PLAIN.fullmatch(text):
        return False
    return _cached_xss(text) if len(text) <= CACHE_MAX_LEN else _raw_xss(text)
