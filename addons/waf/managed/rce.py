"""Managed group ``rce``: OS command injection, reverse shells and script interpreters.

Free text (a JSON comment, a markdown post) legitimately contains shell snippets: ``ls -la``,
``curl -X POST ...``. Rules on the body therefore need a command *chained* onto something else
(``;``, ``|``, ``&&``, ``$(...)``, backticks) or an unmistakable payload (a reverse shell); the
de-obfuscating ``cmd_line`` chain runs on query arguments, headers, cookies and path segments only.
"""

from __future__ import annotations

from typing import Any

from addons.waf.managed.common import COOKIES, DECODE, EVERYWHERE, NOT_BODY, QUERY, SEGMENTS, alt, rx

_CMDS = (
    r"(?:cat|tac|nl|od|xxd|strings|ls|id|whoami|uname|pwd|ps|hostname|ifconfig|ipconfig|netstat|printenv|wget|curl"
    r"|tftp|nc|ncat|netcat|socat|telnet|bash|sh|zsh|ksh|dash|csh|python[23]?|perl|ruby|php|lua|node|nslookup|dig"
    r"|ping|sleep|echo|base64|chmod|chown|rm|mkfifo|busybox|powershell|pwsh|cmd|certutil|bitsadmin|mshta|rundll32"
    r"|regsvr32|sudo|su|crontab|xterm|systeminfo|tasklist|awk)"
)
# Commands that do harm or leak with no argument at all; others need an argument to count.
_BARE = r"(?:id|whoami|uname|pwd|ps|hostname|ifconfig|ipconfig|netstat|printenv|systeminfo|tasklist|ls)"
_PREFIX = r"(?:/(?:usr/)?s?bin/)?"
_ARG = r"(?:-{1,2}\w|/|\$|\.\.?/|[a-z]:\\|https?://|ftp://|\d+\s*(?:$|[;|&#`)]))"


def _chained(separators: str) -> str:
    # a bare command must end the value or a statement (never "| id |", a markdown table row)
    return rf"(?:{separators})\s*{_PREFIX}(?:{_BARE}\s*(?:$|[;&#`)])|{_CMDS}\s+{_ARG})"


_RAW = DECODE

RULES: list[dict[str, Any]] = [
    rx(
        "waf/rce-001",
        10,
        "a command chained after ; | || or &&, with an argument (or a bare recon command)",
        EVERYWHERE,
        _chained(r"[;|&]|&&|\|\|"),
        _RAW,
    ),
    rx(
        "waf/rce-010",
        15,
        "a command on a new line of a query argument, header, cookie or path segment (%0a injection)",
        NOT_BODY,
        _chained(r"[\n\r]"),
        _RAW,
    ),
    rx(
        "waf/rce-002",
        20,
        "command substitution: $( ... ) or backticks around a command",
        NOT_BODY,
        rf"\$\(\s*(?:/(?:usr/)?s?bin/)?{_CMDS}\b|`\s*(?:/(?:usr/)?s?bin/)?{_CMDS}\b[^`]*`",
        _RAW,
    ),
    rx(
        "waf/rce-003",
        30,
        "command substitution $( ... ) in free text, with an argument that is a path, URL or variable",
        EVERYWHERE,
        rf"\$\(\s*(?:/(?:usr/)?s?bin/)?{_CMDS}\s+[^)]*(?:/|\$|https?://)[^)]*\)",
        _RAW,
    ),
    rx(
        "waf/rce-004",
        40,
        "reverse and bind shells",
        EVERYWHERE,
        alt(
            r"/dev/(?:tcp|udp)/",
            r"\b(?:nc|ncat|netcat)\b[^;|&\n]{0,60}\s-[a-z]*[ec]\s",
            r"\b(?:ba|z|k|da)?sh\s+-i\b",
            r"\bmkfifo\s+/tmp/",
            r"\bsocat\s+[^\n]{0,60}exec:",
            r"\bpython[23]?\s+-c\s+[\"']?\s*import\s+(?:socket|os|subprocess|pty)",
            r"\bperl\s+-e\s+[\"']?\s*use\s+socket",
            r"\bphp\s+-r\s+[\"']?\s*\$\w+\s*=\s*fsockopen",
            r"\bruby\s+-rsocket\b",
            r"\bexec\s+\d*<>\s*/dev/",
            r"\bpty\.spawn\s*\(",
        ),
        DECODE,
    ),
    rx(
        "waf/rce-005",
        50,
        "download-and-run: fetch a URL and pipe or save it for execution",
        EVERYWHERE,
        alt(
            r"\b(?:wget|curl|fetch)\b[^|;&\n]{0,120}\|\s*(?:ba|z|k|da)?sh\b",
            r"\b(?:wget|curl)\s+[^;&|\n]{0,120}(?:-o|-O|>)\s*/tmp/",
            r"\bchmod\s+(?:\+x|[0-7]{3,4})\s+/tmp/",
            r"\bcertutil(?:\.exe)?\s+-urlcache\b",
            r"\bbitsadmin(?:\.exe)?\s+/transfer\b",
        ),
        DECODE,
    ),
    rx(
        "waf/rce-006",
        60,
        "PowerShell and cmd.exe execution switches and download cradles",
        EVERYWHERE,
        alt(
            r"\b(?:powershell|pwsh)(?:\.exe)?\s+(?:-\w+\s+)*-(?:e|enc|encodedcommand|c|command|nop|noprofile|w(?:indowstyle)?\s+hidden)\b",
            r"\biex\s*\(",
            r"\binvoke-(?:expression|webrequest|shellcode|mimikatz)\b",
            r"\.downloadstring\s*\(",
            r"\bnew-object\s+(?:system\.)?net\.webclient\b",
            r"\bcmd(?:\.exe)?\s+/[ck]\s",
        ),
        DECODE,
    ),
    rx(
        "waf/rce-007",
        70,
        "shell interpreters and IFS/brace-expansion evasion in arguments and headers",
        NOT_BODY,
        alt(
            r"(?:^|[\s;|&`(=])/(?:usr/)?(?:s?bin)/(?:ba|z|k|da|c)?sh\b",
            r"\$\{?ifs\}?",
            r"\{(?:cat|ls|id|wget|curl|nc|bash|sh),[^}\s]*\}",
            r"(?:^|[;|&\s])(?:cat|ls|id|wget|curl|nc|bash|sh|whoami|uname)\$\{?\w*\}?\s",
        ),
        _RAW,
    ),
    rx(
        "waf/rce-008",
        80,
        "de-obfuscated command line (quotes, carets, backslashes removed) running a command with a path or URL",
        [SEGMENTS, QUERY, COOKIES],
        rf"(?:^|\s){_CMDS}(?:\s+-\S+)*\s*(?:/(?:etc|bin|tmp|dev|proc|var|usr)/|https?://\d|\$\(|[a-z]:\\)",
        ["url_decode", "html_entity_decode", "cmd_line"],
    ),
    rx(
        "waf/rce-009",
        90,
        "Shellshock: a function definition at the start of a value",
        [*EVERYWHERE],
        r"\(\s*\)\s*\{\s*[^}]{0,20};\s*\}\s*;",
        DECODE,
    ),
    rx(
        "waf/rce-011",
        95,
        "a path spelled with shell wildcards from its first directory on: /???/??t /???/p??s?? (/bin/cat /etc/passwd)",
        NOT_BODY,
        r"(?:^|[\s;|&`$(])/\w*\?[\w?]*/\w*[?*][\w?*]*",
        _RAW,
    ),
]
