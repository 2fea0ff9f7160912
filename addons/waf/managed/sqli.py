"""Managed group ``sqli``: SQL injection (libinjection per placement, then explicit shapes)."""

from __future__ import annotations

from typing import Any

from addons.waf.managed.common import (
    BODY_VALUES,
    COOKIES,
    DECODE_ONLY,
    DECODE_WS,
    EVERYWHERE,
    HEADERS,
    QUERY,
    SEGMENTS,
    alt,
    rx,
    stmt,
)  # fmt: skip


def _sqli(rule_id: str, priority: int, rationale: str, fields: Any) -> dict[str, Any]:
    return stmt(rule_id, priority, rationale, {"sqli": {"field": fields, "transformations": DECODE_ONLY}})


RULES: list[dict[str, Any]] = [
    _sqli("waf/sqli-001", 10, "libinjection SQLi fingerprint in a query argument (name or value)", QUERY),
    _sqli(
        "waf/sqli-002", 20, "libinjection SQLi fingerprint in a body value (form, multipart, JSON, raw)", BODY_VALUES
    ),
    _sqli("waf/sqli-003", 30, "libinjection SQLi fingerprint in a cookie", COOKIES),
    _sqli("waf/sqli-004", 40, "libinjection SQLi fingerprint in a URL path segment", SEGMENTS),
    _sqli("waf/sqli-005", 50, "libinjection SQLi fingerprint in any request header", HEADERS),
    rx(
        "waf/sqli-010",
        100,
        "UNION-based extraction: UNION [ALL] SELECT, comments and parentheses allowed between",
        EVERYWHERE,
        r"\bunion(?:[\s(+]|/\*.*?\*/)+(?:all(?:[\s(+]|/\*.*?\*/)+|distinct(?:[\s(+]|/\*.*?\*/)+)?select\b",
        DECODE_WS,
    ),
    rx(
        "waf/sqli-011",
        110,
        "time-based blind injection: SLEEP/BENCHMARK/PG_SLEEP/WAITFOR DELAY/DBMS_PIPE",
        EVERYWHERE,
        alt(
            r"\b(?:sleep|pg_sleep)\s*\(\s*[\d'\"(]",
            r"\bbenchmark\s*\(\s*\d+\s*,",
            r"\bwaitfor\s+(?:delay|time)\s+'",
            r"\bdbms_pipe\s*\.\s*receive_message\b",
            r"\bpg_sleep\b",
            r"\brandomblob\s*\(\s*\d{6,}",
        ),
        DECODE_WS,
    ),
    rx(
        "waf/sqli-012",
        120,
        "catalog and system objects that only an attacker enumerates",
        EVERYWHERE,
        alt(
            r"\binformation_schema\b",
            r"\bmysql\s*\.\s*(?:user|db)\b",
            r"\bpg_(?:catalog|shadow|user)\b",
            r"\bsqlite_(?:master|schema)\b",
            r"\bsys\s*\.\s*(?:objects|tables|columns|sysobjects|user_objects)\b",
            r"\bsysobjects\b",
            r"\ball_tables\b",
            r"\b(?:msysobjects|msysaccessobjects)\b",
            r"@@(?:version|datadir|hostname)\b",
        ),
        DECODE_WS,
    ),
    rx(
        "waf/sqli-013",
        130,
        "error-based extraction and file access functions",
        EVERYWHERE,
        alt(
            r"\b(?:extractvalue|updatexml)\s*\(",
            r"\bload_file\s*\(",
            r"\binto\s+(?:out|dump)file\b",
            r"\bconcat(?:_ws)?\s*\(\s*0x[0-9a-f]+",
            r"\butl_(?:http|inaddr)\s*\.",
            r"\bxp_(?:cmdshell|dirtree|regread)\b",
            r"\bexec\s+master\s*\.",
            r"\bopen(?:rowset|query|datasource)\s*\(",
            r"\bcast\s*\(.{0,40}\bas\s+(?:int|numeric)\s*\).{0,10}(?:--|#)",
            r"\bgtid_subset\s*\(",
            r"\bjson_keys\s*\(\s*\(\s*select",
        ),
        DECODE_WS,
    ),
    rx(
        "waf/sqli-014",
        140,
        "stacked query: a statement separator followed by a destructive or privileged statement",
        EVERYWHERE,
        alt(
            r";\s*(?:drop|truncate|alter)\s+(?:table|database|schema|user)\b",
            r";\s*delete\s+from\b",
            r";\s*insert\s+into\b",
            r";\s*update\s+[\w.`\"\[\]]+\s+set\b",
            r";\s*(?:exec(?:ute)?|declare|shutdown)\b",
            r";\s*create\s+(?:table|user|function|procedure)\b",
            r";\s*grant\s+",
        ),
        DECODE_WS,
    ),
    rx(
        "waf/sqli-015",
        150,
        "quote-break tautology: ' OR 'x'='x, \" or 1=1, ') or ('a'='a, 1 and 1=1--",
        EVERYWHERE,
        alt(
            r"['\"`]\s*\)*\s*(?:or|and|xor|\|\||&&)\s*\(*\s*(?:['\"`][^'\"`]{0,20}['\"`]|\d+)\s*(?:=|<>|!=|<=>|like|>|<)\s*\(*\s*(?:['\"`]|\d)",
            r"\b(?:or|and)\s+(\d+)\s*=\s*\d+\s*(?:--|#|/\*|;)",
            r"['\"`]\s*(?:or|and)\s+(?:true|false)\s*(?:--|#|;|\))",
        ),
        DECODE_WS,
    ),
    rx(
        "waf/sqli-016",
        160,
        "comment obfuscation: MySQL versioned comments and keywords split by inline comments",
        EVERYWHERE,
        alt(
            r"/\*!\d*\s*(?:union|select|and|or|from|where)",
            r"\b(?:sel|uni)/\*\*/",
            r"(?:select|union|and|or|where)/\*[^*]*\*/(?:select|from|\d)",
        ),
        DECODE_WS,
    ),
    rx(
        "waf/sqli-017",
        170,
        "ORDER BY / GROUP BY column probing and boolean blind probes with SQL functions",
        EVERYWHERE,
        alt(
            r"\border\s+by\s+\d+\s*(?:--|#|/\*)",
            r"\bgroup\s+by\s+.{1,40}\bhaving\s+\d+\s*=",
            r"\b(?:and|or)\s+(?:ascii|ord|substring|substr|mid|length|char_length|hex|bin)\s*\(",
            r"\b(?:and|or)\s+\(?\s*select\s+(?:count|case|if|sleep|\d)",
            r"\bcase\s+when\s+.{1,60}\bthen\s+.{1,60}\belse\b.{1,60}\bend\b.{0,20}(?:--|#|\))",
        ),
        DECODE_WS,
    ),
    rx(
        "waf/sqli-018",
        180,
        "CHAR()/CHR() string building used to smuggle quotes",
        EVERYWHERE,
        r"\b(?:char|chr|nchar)\s*\(\s*\d{2,3}\s*(?:[,|+]\s*(?:char|chr)?\s*\(?\s*\d{2,3}\s*\)?\s*){2,}",
        DECODE_WS,
    ),
]

__all__ = ["HEADERS", "RULES"]
