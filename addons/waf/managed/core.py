"""Managed group ``core``: size limits, scanners, protocol anomalies, restricted paths and files.

Sizes follow AWS's common rule set (path 1,024 B, query string 2,048 B, Cookie 10,240 B). A body
beyond the inspection limit is *counted* and labelled (``managed:core:core-006``) rather than
blocked, since uploads are ordinary API traffic: block on that label where bodies should be small.
A header section beyond its limit (8 KB or 200 fields by default) is counted and labelled the same
way (``managed:core:core-016``): the groups inspect headers and cookies with ``oversize: continue``
(as AWS's managed cookie rules do), so whatever lies beyond the limits (a smuggling header after
8 KB of padding) is unseen by them; block on the label to refuse such requests.
"""

from __future__ import annotations

from typing import Any

from addons.waf.managed.common import (
    ARGS,
    COOKIES,
    DECODE,
    EVERYWHERE,
    HEADERS,
    LOWER,
    PATH,
    PATH_CHAIN,
    QUERY,
    QUERY_STRING,
    SEGMENTS,
    alt,
    rx,
    stmt,
)  # fmt: skip
from addons.waf.models import MAX_HEADER_LIMIT

_SCANNERS = alt(
    r"sqlmap",
    r"nikto",
    r"\bnmap\b",
    r"masscan",
    r"nessus",
    r"openvas",
    r"acunetix",
    r"netsparker",
    r"wpscan",
    r"dirbuster",
    r"gobuster",
    r"feroxbuster",
    r"\bffuf\b",
    r"wfuzz",
    r"nuclei",
    r"zgrab",
    r"\bw3af",
    r"havij",
    r"arachni",
    r"whatweb",
    r"jaeles",
    r"commix",
    r"xsstrike",
    r"dalfox",
    r"\bhydra\b",
    r"zmeu",
    r"morfeus",
    r"jorgee",
    r"fimap",
    r"bbqsql",
    r"sqlninja",
    r"paros",
    r"webinspect",
    r"appscan",
    r"struts-pwn",
    r"log4j-scan",
    r"\bzap/",
    r"burp(?:suite|collaborator)",
    r"\bdirb\b",
    r"skipfish",
    r"vega/",
    r"grabber",
    r"\bcensys",
    r"interactsh",
    r"httpx - open-source",
    r"\bxray\b",
    r"fuzz faster u fool",
)

RULES: list[dict[str, Any]] = [
    rx(
        "waf/core-001",
        10,
        "User-Agent of a vulnerability scanner or attack tool",
        {"header": "user-agent"},
        _SCANNERS,
        LOWER,
    ),
    stmt(
        "waf/core-002",
        20,
        "no User-Agent header: counted and labelled, API clients without one exist",
        {"not": {"size_constraint": {"field": {"header": "user-agent"}, "comparison": "ge", "size": 0}}},
        action="count",
    ),
    stmt(
        "waf/core-003",
        30,
        "URI path longer than 1,024 bytes",
        {"size_constraint": {"field": PATH, "comparison": "gt", "size": 1024}},
    ),
    stmt(
        "waf/core-004",
        40,
        "query string longer than 2,048 bytes",
        {"size_constraint": {"field": QUERY_STRING, "comparison": "gt", "size": 2048}},
    ),
    stmt(
        "waf/core-005",
        50,
        "Cookie header longer than 10,240 bytes",
        {"size_constraint": {"field": {"header": "cookie"}, "comparison": "gt", "size": 10240}},
    ),
    stmt(
        "waf/core-006",
        60,
        "body larger than the inspection limit: counted and labelled, the uninspected part is unseen",
        {"size_constraint": {"field": {"body": {"oversize": "match"}}, "comparison": "gt", "size": 8 * 1024 * 1024}},
        action="count",
    ),
    stmt(
        "waf/core-016",
        55,  # before core-006 (the body): decided as soon as the headers are in
        "header section beyond the inspection limit: counted and labelled, the uninspected headers are unseen",
        # only the oversize check can match: no header value is larger than the largest limit allows
        {
            "size_constraint": {
                "field": {"all_headers": {"oversize": "match"}},
                "comparison": "gt",
                "size": MAX_HEADER_LIMIT,
            }
        },
        action="count",
    ),
    rx(
        "waf/core-007",
        70,
        "NUL byte in any decoded value (truncation attacks against C-based parsers and file APIs)",
        [PATH, *EVERYWHERE],
        r"\x00|%(?:25)?00|&#x?0+;?|\\(?:x00|u0000)",
        LOWER,
    ),
    rx(
        "waf/core-008",
        80,
        "invalid or overlong percent-encoding, %u encoding, or double-encoded control characters in the URL",
        [PATH, QUERY_STRING],
        alt(
            r"%(?:[^0-9a-f]|[0-9a-f](?:[^0-9a-f]|$)|$)",
            r"%c[01]%[0-9a-f]{2}",
            r"%e0%[89][0-9a-f]%[0-9a-f]{2}",
            r"%f0%8[0-9a-f]%[0-9a-f]{2}%[0-9a-f]{2}",
            r"%u[0-9a-f]{4}",
            r"%25(?:2e|00|0a|0d|3c|3e|27|22|25)",
            # a double-encoded slash alone is how a URL inside a URL-encoded value encodes its own
            # %2F; next to dots it is a traversal
            r"(?:\.|%2e)%25(?:2f|5c)|%25(?:2f|5c)(?:\.|%2e)",
        ),
        LOWER,
    ),
    rx(
        "waf/core-009",
        90,
        "request for a backup, log, configuration, key or source-control file by extension",
        PATH,
        r"\.(?:bak|backup|old|orig|save|swp|swo|tmp|log|ini|conf|cfg|env|sql|sqlite3?|db|mdb|dump|pem|p12|pfx|jks|keystore|htaccess|htpasswd|git|svn|ds_store|inc|asa|bash_history|ps1|bat|cmd|vbs|passwd)(?:$|[;?#/])",
        PATH_CHAIN,
    ),
    rx(
        "waf/core-010",
        100,
        "request for a dotfile, source-control directory or a well-known admin console",
        PATH,
        alt(
            r"/\.(?:git|svn|hg|bzr|env|aws|ssh|docker|kube|npmrc|pypirc|netrc|htpasswd|htaccess|idea|vscode|terraform|circleci|travis)(?:/|$|\.)",
            r"/(?:wp-admin|wp-login\.php|xmlrpc\.php|phpmyadmin|pma|adminer(?:-[\d.]+)?\.php|server-status|server-info|phpinfo\.php|\.well-known/\.\.)(?:/|$)",
        ),
        PATH_CHAIN,
    ),
    rx(
        "waf/core-011",
        110,
        "CR/LF followed by a header name in the URL, a header or a cookie (response splitting, header injection)",
        [PATH, SEGMENTS, QUERY, HEADERS, COOKIES],
        r"[\r\n]\s*(?:set-cookie|location|content-(?:type|length|disposition)|x-[\w-]+|host|refresh|transfer-encoding|access-control-[\w-]+)\s*:",
        DECODE,
    ),
    stmt(
        "waf/core-012",
        120,
        "Transfer-Encoding other than plain chunked (request smuggling)",
        {
            "and": [
                {"size_constraint": {"field": {"header": "transfer-encoding"}, "comparison": "ge", "size": 0}},
                {
                    "not": {
                        "byte_match": {
                            "field": {"header": "transfer-encoding"},
                            "match": "exactly",
                            "value": "chunked",
                            "transformations": ["lowercase"],
                        }
                    }
                },
            ]
        },
    ),
    rx(
        "waf/core-013",
        130,
        "Content-Length that is not a single decimal number (request smuggling)",
        {"header": "content-length"},
        r"[^0-9]|^$",
        ["none"],
    ),
    rx(
        "waf/core-014",
        140,
        "upload with an executable or server-script file name",
        {"form": {}},
        r"\.(?:php\d?|phtml|phar|jsp|jspx|asp|aspx|ashx|asmx|cer|cgi|pl|py|sh|exe|dll|bat|cmd|ps1|vbs|war|jar|htaccess|shtml)(?:$|[.;\s\x00])",
        DECODE,
    ),
    rx(
        "waf/core-015",
        150,
        "control characters other than tab, CR and LF in a header, query argument or path segment",
        [SEGMENTS, QUERY, HEADERS, COOKIES],
        r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]",
        DECODE,
    ),
    rx(
        "waf/core-017",
        170,
        "remote file inclusion: a URL ending in '?' (the appended extension becomes its query), or a text "
        "or include file on a bare IP address, as a whole query argument or form field",
        [QUERY, {"form": {}}],
        alt(
            r"^\s*(?:https?|ftps?)://[^\s?#]+\?\s*$",
            r"^\s*(?:https?|ftps?)://\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?/[^\s?#]*\.(?:txt|inc)\b",
        ),
        DECODE,
    ),
    stmt(
        "waf/core-018",
        180,
        "a User-Agent header sent empty: scripts and scanners do that, browsers and SDKs send a name",
        {"size_constraint": {"field": {"header": "user-agent"}, "comparison": "eq", "size": 0}},
    ),
]

_ = ARGS
