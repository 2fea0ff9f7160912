"""Managed group ``xxe``: XML external entities and their relatives in XML bodies and parameters.

A DOCTYPE is only suspicious with an internal subset or an external identifier (``<!DOCTYPE
html>`` in an HTML snippet is not); any ENTITY declaration, XInclude and XSLT document()/file
access are.
"""

# ruff: noqa: E501  (rule data: a pattern reads better on one line than split across string pieces)

from __future__ import annotations

from typing import Any

from addons.waf.managed.common import BODY, COOKIES, DECODE, QUERY, RAW_BODY, alt, rx

_PATTERN = alt(
    r"<!doctype\s+[^\s>\[]+\s*\[",
    r"<!doctype\s+[^\s>\[]+\s+(?:system|public)\s",
    r"<!entity\s",
    r"<!element\s+\w+\s",
    r"<!attlist\s",
    r"<xi:include\b",
    r"xmlns:xi\s*=\s*[\"']http://www\.w3\.org/2001/xinclude",
    r"<xsl:(?:include|import)\b[^>]*\bhref\s*=",
    r"\bdocument\s*\(\s*['\"](?:file|https?|ftp|php|expect|jar|gopher)://",
    r"\bunparsed-text\s*\(",
    r"<!\[cdata\[.{0,100}<!entity",
)

RULES: list[dict[str, Any]] = [
    rx(
        "waf/xxe-001",
        10,
        "DOCTYPE with an internal subset or external identifier, ENTITY/ELEMENT/ATTLIST declarations, XInclude in the body",
        RAW_BODY,
        _PATTERN,
        DECODE,
    ),
    rx(
        "waf/xxe-002",
        20,
        "the same XML constructs inside a query argument, cookie or decoded body value",
        [QUERY, COOKIES, BODY],
        _PATTERN,
        DECODE,
    ),
    rx(
        "waf/xxe-003",
        30,
        "external entity identifiers pointing at files or internal services",
        [RAW_BODY, QUERY, BODY],
        r"\b(?:system|public)\s+(?:[\"'][^\"']*[\"']\s+)?[\"'](?:file|php|expect|jar|netdoc|gopher|ftp|https?|data)\s*:",
        DECODE,
    ),
]
