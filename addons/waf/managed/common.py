"""Fields, transformation chains and a rule builder shared by the managed groups."""

from __future__ import annotations

from typing import Any

# Fields. Headers are all inspected (the Cookie header through ``COOKIES``, parsed). Every group's
# all_headers and cookies fields keep the default ``oversize: continue`` (AWS's managed cookie rules
# use CONTINUE): they inspect what lies within the limits; core-016 counts and labels the rest.
PATH: Any = "uri_path"
SEGMENTS: Any = "path_segments"
QUERY: Any = {"all_query_args": {"scope": "all"}}
QUERY_STRING: Any = "query_string"
HEADERS: Any = {"all_headers": {"exclude": ["cookie"]}}
COOKIES: Any = {"cookies": {"scope": "all"}}
BODY: Any = {"body_values": {"scope": "all"}}
BODY_VALUES: Any = {"body_values": {}}  # values only: JSON keys and form names are identifiers
RAW_BODY: Any = "body"

EVERYWHERE: list[Any] = [SEGMENTS, QUERY, HEADERS, COOKIES, BODY]
ARGS: list[Any] = [SEGMENTS, QUERY, COOKIES, BODY]  # client-chosen values, headers aside
NOT_BODY: list[Any] = [SEGMENTS, QUERY, HEADERS, COOKIES]

# Chains (see addons/waf/transforms.py): decode what clients and attackers encode, then fold case.
# Few distinct chains on purpose: rules sharing a chain share one search (see engine.py).
DECODE = ["url_decode", "url_decode_uni", "html_entity_decode", "utf8_to_unicode", "lowercase", "remove_nulls"]
DECODE_JS = ["url_decode", "url_decode_uni", "html_entity_decode", "js_decode", "css_decode", "utf8_to_unicode",
             "lowercase", "remove_nulls"]  # fmt: skip
DECODE_WS = DECODE  # patterns use \s+ rather than a whitespace-compressing chain (one search fewer)
DECODE_ONLY = ["url_decode", "html_entity_decode"]
PATH_CHAIN = DECODE
LOWER = ["lowercase"]


def rx(rule_id: str, priority: int, rationale: str, fields: Any, pattern: str, chain: list[str] | None = None,
       action: str = "block") -> dict[str, Any]:  # fmt: skip
    """A regex rule: ``pattern`` (RE2) over ``fields`` after ``chain``."""
    return {
        "id": rule_id,
        "priority": priority,
        "action": action,
        "rationale": rationale,
        "statement": {"regex": {"field": fields, "pattern": pattern, "transformations": chain or DECODE}},
    }


def stmt(
    rule_id: str, priority: int, rationale: str, statement: dict[str, Any], action: str = "block"
) -> dict[str, Any]:
    return {"id": rule_id, "priority": priority, "action": action, "rationale": rationale, "statement": statement}


def alt(*parts: str) -> str:
    """Alternation of pattern parts, each in its own non-capturing group."""
    return "|".join(f"(?:{p})" for p in parts)
