"""Managed group ``nosql_and_prototype``: MongoDB-style operator injection and JavaScript
prototype pollution, in JSON keys, bracketed parameter names (``user[$ne]=``) and JSON-in-a-value.

An API whose clients legitimately send query operators (a search endpoint taking a Mongo filter)
excludes ``group:nosql_and_prototype`` for that route.
"""

from __future__ import annotations

from typing import Any

from addons.waf.managed.common import BODY, COOKIES, DECODE, QUERY, RAW_BODY, alt, rx

_OPS = (
    r"(?:where|ne|eq|gt|gte|lt|lte|in|nin|regex|exists|or|and|nor|not|expr|function|accumulator|elemmatch|all|size"
    r"|type|mod|text|jsonschema|lookup|graphlookup|unionwith|merge|out|set|unset|rename|eval|options|natural|comment)"
)
# operators that run code, negate, test existence or reach other collections, in any use
_RISKY = (
    r"(?:where|ne|nin|not|nor|regex|exists|expr|function|accumulator|eval|lookup|graphlookup|unionwith|merge|out"
    r"|jsonschema|elemmatch)"
)
_JSON_KEYS: Any = {"json_body": {"scope": "keys", "invalid_fallback": "none"}}
_KEYS: list[Any] = [{"all_query_args": {"scope": "keys"}}, {"form": {"scope": "keys"}}, {"cookies": {"scope": "keys"}}]
_VALUES: list[Any] = [QUERY, COOKIES, {"form": {}}, {"all_headers": {"exclude": ["cookie"]}}]

RULES: list[dict[str, Any]] = [
    rx(
        "waf/nosql_and_prototype-001",
        10,
        "a JSON object key that is a query operator ($ne, $gt, $where, $regex...)",
        _JSON_KEYS,
        rf"^\s*\${_OPS}\s*$",
        DECODE,
    ),
    rx(
        "waf/nosql_and_prototype-002",
        20,
        "a bracketed parameter name carrying an operator: user[$ne]=, password[$regex]=",
        _KEYS,
        rf"\[\s*\${_OPS}\s*\]",
        DECODE,
    ),
    rx(
        "waf/nosql_and_prototype-003",
        30,
        "JSON with an operator key smuggled inside a query argument, cookie, form field or header: an operator "
        "that runs code, negates or tests existence, or a comparison against nothing ($gt: '', $ne: null); a "
        "comparison with a real value is what filter APIs (Parse, Strapi) take",
        _VALUES,
        alt(
            rf"[{{,]\s*[\"']?\${_RISKY}[\"']?\s*:",
            rf"[{{,]\s*[\"']?\${_OPS}[\"']?\s*:\s*(?:\"\"|''|null\b|true\b|\{{\s*\}}|\[\s*(?:\]|\{{\s*\}}))",
        ),
        DECODE,
    ),
    rx(
        "waf/nosql_and_prototype-004",
        40,
        "server-side JavaScript in a $where/mapReduce-style value: sleep, this.x comparisons, return true",
        [*_VALUES, BODY],
        alt(
            r"\$where\b.{0,40}(?:sleep|function|this\.|return)",
            r"';\s*(?:return\s+(?:true|1)|sleep\s*\(\d+\)|while\s*\(\s*true\s*\))",
            r"['\"]\s*;\s*return\s+[\w$.]+\s*[(;]",
            r"\|\|\s*['\"]?1['\"]?\s*==\s*['\"]?1",
            r"\bthis\.\w+\s*(?:==|!=)\s*['\"][^'\"]*['\"]\s*(?:\|\||&&)",
        ),
        DECODE,
    ),
    rx(
        "waf/nosql_and_prototype-005",
        50,
        "prototype pollution: a __proto__ key, or constructor.prototype, in JSON, parameters or cookies",
        [_JSON_KEYS, *_KEYS],
        r"__proto__|constructor\s*\]?\s*[\[.]\s*[\"']?\s*prototype",
        DECODE,
    ),
    rx(
        "waf/nosql_and_prototype-006",
        60,
        'prototype pollution spelled inside a value (JSON text or dotted path): {"__proto__": ...}, a.__proto__.b',
        [*_VALUES, RAW_BODY],
        alt(
            r"[\"']__proto__[\"']\s*:",
            r"[\"']constructor[\"']\s*:\s*\{\s*[\"']prototype[\"']\s*:",
            r"(?:^|[.\[])__proto__[.\[]",
            r"\bconstructor\s*\.\s*prototype\s*\.\s*\w+\s*=",
        ),
        DECODE,
    ),
]
