"""Managed group ``xss``: cross-site scripting (libinjection per placement, then explicit shapes).

Rich text is ordinary API traffic (editors post ``<p>``, ``<a href>``, ``<img src>``, inline
styles), so the regexes look for what makes markup *active*: script elements, event handler
attributes, script URLs, embedding elements and CSS expressions.
"""

from __future__ import annotations

import re
from typing import Any

from addons.waf.managed.common import (
    BODY_VALUES,
    COOKIES,
    DECODE_JS,
    EVERYWHERE,
    HEADERS,
    QUERY,
    SEGMENTS,
    alt,
    rx,
    stmt,
)

_CHAIN = ["url_decode", "html_entity_decode"]  # the sqli group's chain: libinjection shares the decoded values
_EVENTS = (
    r"on(?:error|load|unload|beforeunload|mouse(?:over|out|enter|leave|down|up|move|wheel)|focus(?:in|out)?|blur"
    r"|click|dblclick|auxclick|contextmenu|key(?:down|up|press)|input|change|submit|reset|select|search|invalid"
    r"|toggle|animation(?:start|end|iteration)|transition(?:end|start|run)|pointer(?:over|down|up|enter|move)"
    r"|begin|end|repeat|hashchange|pageshow|pagehide|popstate|message|resize|scroll|wheel|copy|cut|paste"
    r"|drag(?:start|end|enter|over|leave)?|drop|play|playing|pause|canplay|loadstart|loadeddata|progress"
    r"|readystatechange|afterprint|beforeprint|show|touch(?:start|end|move)|formdata|securitypolicyviolation)"
)


def _xss(rule_id: str, priority: int, rationale: str, fields: Any) -> dict[str, Any]:
    return stmt(rule_id, priority, rationale, {"xss": {"field": fields, "transformations": _CHAIN}})


# an attribute value that does not start with "https://", quoted or not (RE2 has no lookahead: one
# branch per first difference)
_DIFFERS = "|".join(re.escape("https://"[:i]) + f"[^{re.escape('https://'[i])}]" for i in range(1, 8))
_NOT_HTTPS = f"(?:[\"'`]\\s*(?:[^h]|{_DIFFERS})|[^h\"'`\\s>]|{_DIFFERS})"

RULES: list[dict[str, Any]] = [
    _xss("waf/xss-001", 10, "libinjection XSS in a query argument (name or value)", QUERY),
    _xss("waf/xss-002", 20, "libinjection XSS in a body value (form, multipart, JSON, raw)", BODY_VALUES),
    _xss("waf/xss-003", 30, "libinjection XSS in a cookie", COOKIES),
    _xss("waf/xss-004", 40, "libinjection XSS in a URL path segment", SEGMENTS),
    _xss("waf/xss-005", 50, "libinjection XSS in any request header", HEADERS),
    rx("waf/xss-010", 100, "script element, opened or closed", EVERYWHERE, r"<\s*/?\s*script\b", DECODE_JS),
    rx(
        "waf/xss-011",
        110,
        "event handler attribute (inside a tag or after breaking out of an attribute)",
        EVERYWHERE,
        rf"(?:<[a-z!][^>]*?|[\"'`;]\s*)[\s/\"'`;]*{_EVENTS}\s*=|[\s\"'`/]{_EVENTS}\s*=\s*[\"'`]?[^\s\"'`>]*[(`]",
        DECODE_JS,
    ),
    rx(
        "waf/xss-012",
        120,
        "script URL scheme (javascript:, vbscript:, livescript:) used as code",
        EVERYWHERE,
        r"\b(?:j\s*a\s*v\s*a|v\s*b|l\s*i\s*v\s*e)\s*s\s*c\s*r\s*i\s*p\s*t\s*:(?:\s*//|[^\s]{0,80}?[(`=]|\s*(?:alert|prompt|confirm|eval|fetch|import|location|document|window|top|self|this)\b)",
        DECODE_JS,
    ),
    rx(
        "waf/xss-013",
        130,
        "elements that load or embed active content; an iframe only with a script, data or plain-http source, "
        "srcdoc or a handler (an https embed from a rich-text editor is content, not script)",
        EVERYWHERE,
        alt(
            r"<\s*(?:frame|frameset|object|embed|applet|base|isindex|portal|xss|import)\b|<\s*meta\b[^>]*http-equiv",
            rf"<\s*iframe\b[^>]*(?:\bsrc\s*=\s*{_NOT_HTTPS}|\bsrcdoc\b|\bon[a-z]+\s*=)",
        ),
        DECODE_JS,
    ),
    rx(
        "waf/xss-014",
        140,
        "HTML or SVG data URLs and srcdoc/formaction attributes",
        EVERYWHERE,
        alt(
            r"\bdata\s*:\s*(?:text/html|application/(?:x-)?(?:javascript|ecmascript|xhtml)|text/(?:java|ecma|vb)script|image/svg\+xml)",
            r"\b(?:srcdoc|formaction|xlink:href|action)\s*=\s*[\"'`]?\s*(?:javascript|data|vbscript)\s*:",
            r"\bsrcdoc\s*=\s*[\"'`]?\s*<",
        ),
        DECODE_JS,
    ),
    rx(
        "waf/xss-015",
        150,
        "CSS that runs script: expression(), behavior, -moz-binding, url(javascript:)",
        EVERYWHERE,
        alt(
            r"\bexpression\s*\(",
            r"\bbehavior\s*:\s*url",
            r"-moz-binding\s*:",
            r"url\s*\(\s*[\"']?\s*(?:java|vb)script\s*:",
            r"@import\s+[\"']?\s*(?:java|vb)script",
        ),
        DECODE_JS,
    ),
    rx(
        "waf/xss-016",
        160,
        "SVG and MathML animation/handler tricks and template breakouts",
        EVERYWHERE,
        alt(
            r"<\s*(?:svg|math)\b[^>]*>\s*<\s*(?:animate|set|script|a|maction|mtext)\b",
            r"<\s*(?:animate|set)\b[^>]*\battributename\s*=",
            r"</\s*(?:title|textarea|style|noscript|template|xmp|noembed|iframe)\s*>\s*<\s*(?:script|img|svg|math"
            r"|iframe|object|embed|body|details|video|audio|input|form|base|link|meta|style|marquee|[a-z]+\s[^>]*\bon[a-z]+\s*=)",
            r"<!--.*?-->\s*<\s*(?:script|img|svg|iframe)",
        ),
        DECODE_JS,
    ),
    rx(
        "waf/xss-017",
        170,
        "DOM sinks reached from injected markup: document.cookie/location/write after a tag or quote",
        EVERYWHERE,
        r"(?:<[a-z][^>]*|[\"'`])\s*[^\s]*\b(?:document\s*\.\s*(?:cookie|domain|write)|window\s*\.\s*location|\.innerhtml\s*=)",
        DECODE_JS,
    ),
]
