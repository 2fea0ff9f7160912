"""WAF text transformations (AWS WAF's list, applied in order per statement).

Each transformation is a pure ``str -> str`` function with a fast path for the common case where
there is nothing to decode, because every inspected value goes through its statement's chain.

Most transformations are *local*: the output at a position depends only on a bounded window of
the input, and a newline in the input stays a newline. The engine applies such chains once to all
values of a field joined by newlines (one pass, one regex search) instead of value by value; the
sets below say which transformations allow that (see ``engine.Bank``).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
from collections.abc import Callable
from urllib.parse import unquote, unquote_plus

Transform = Callable[[str], str]

URL_DECODE_ROUNDS = 3  # url_decode repeats until stable, at most this many passes (double/triple encoding)

_HEX = frozenset("0123456789abcdefABCDEF")


def none(s: str) -> str:
    return s


def url_decode(s: str) -> str:
    """%XX and ``+``, repeated until stable (bounded): ``%252e`` becomes ``.``."""
    for _ in range(URL_DECODE_ROUNDS):
        if "%" not in s and "+" not in s:
            return s
        decoded = unquote_plus(s, errors="replace")
        if decoded == s:
            return s
        s = decoded
    return s


_PCT_U = re.compile(r"%[uU]([0-9a-fA-F]{4})")


def url_decode_uni(s: str) -> str:
    """IIS-style ``%uHHHH`` as well as ``%XX``."""
    if "%" not in s:
        return s
    if "%u" in s or "%U" in s:
        s = _PCT_U.sub(lambda m: chr(int(m.group(1), 16)), s)
    return unquote(s, errors="replace")


def html_entity_decode(s: str) -> str:
    if "&" not in s:
        return s
    return html.unescape(s)


_JS_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|[0-7]{1,3}|[^\n])")
_JS_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _js_unescape(m: re.Match[str]) -> str:
    e = m.group(1)
    if e[0] == "u" and len(e) > 1:
        code = int(e[2:-1] if e[1] == "{" else e[1:], 16)
        return chr(code) if code <= 0x10FFFF else "\ufffd"
    if e[0] == "x" and len(e) == 3:
        return chr(int(e[1:], 16))
    if e[0] in "01234567":
        return _JS_SIMPLE["0"] if e == "0" else chr(int(e, 8) & 0xFF)
    return _JS_SIMPLE.get(e, e)


def js_decode(s: str) -> str:
    """JavaScript escapes: ``\\xHH``, ``\\uHHHH``, ``\\u{H..}``, octal, ``\\n``...; ``\\c`` is ``c``.

    A backslash before a newline is kept as it is (so newlines survive, see the module docstring).
    """
    if "\\" not in s:
        return s
    return _JS_ESCAPE.sub(_js_unescape, s)


_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})[ \t]?|\\([^\n0-9a-fA-F])")


def _css_unescape(m: re.Match[str]) -> str:
    if m.group(1):
        code = int(m.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF else "\ufffd"
    return m.group(2)


def css_decode(s: str) -> str:
    """CSS escapes: ``\\6a`` -> ``j``, ``\\:`` -> ``:`` (a following space or tab is consumed)."""
    if "\\" not in s:
        return s
    return _CSS_ESCAPE.sub(_css_unescape, s)


_C_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|[abfnrtv\\?'\"])")
_C_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
             "\\": "\\", "?": "?", "'": "'", '"': '"'}  # fmt: skip


def _c_unescape(m: re.Match[str]) -> str:
    e = m.group(1)
    if e[0] == "x":
        return chr(int(e[1:], 16))
    if e[0] in "01234567":
        return chr(int(e, 8) & 0xFF)
    return _C_SIMPLE[e]


def escape_seq_decode(s: str) -> str:
    """ANSI C escape sequences (``\\n``, ``\\x41``, ``\\101``); unknown escapes stay as they are."""
    if "\\" not in s:
        return s
    return _C_ESCAPE.sub(_c_unescape, s)


_B64_STRICT = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
_B64_JUNK = re.compile(r"[^A-Za-z0-9+/_-]")


def _b64(text: str) -> str | None:
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.decode("utf-8", "replace")


def base64_decode(s: str) -> str:
    """Strict: the whole value must be base64 (standard or URL-safe alphabet); otherwise unchanged."""
    stripped = s.strip()
    if len(stripped) < 4 or not _B64_STRICT.match(stripped):
        return s
    decoded = _b64(stripped.rstrip("="))
    return s if decoded is None else decoded


def base64_decode_ext(s: str) -> str:
    """Forgiving: characters outside the alphabet are ignored, padding is repaired."""
    cleaned = _B64_JUNK.sub("", s.split("=", 1)[0])
    if len(cleaned) < 4:
        return s
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    decoded = _b64(cleaned)
    return s if decoded is None else decoded


def hex_decode(s: str) -> str:
    """A value made only of hex digit pairs becomes the bytes they spell; anything else is unchanged."""
    t = s.strip()
    if len(t) < 2 or len(t) % 2 or not _HEX.issuperset(t):
        return s
    return bytes.fromhex(t).decode("utf-8", "replace")


_SQL_HEX = re.compile(r"0[xX]((?:[0-9a-fA-F]{2})+)")


def sql_hex_decode(s: str) -> str:
    """``0x414243`` -> ``ABC`` wherever it appears."""
    if "0x" not in s and "0X" not in s:
        return s
    return _SQL_HEX.sub(lambda m: bytes.fromhex(m.group(1)).decode("latin-1"), s)


def lowercase(s: str) -> str:
    return s.lower()


_WS = re.compile(r"[\f\t\n\r\v \xa0]+")


def compress_whitespace(s: str) -> str:
    """Runs of whitespace (``\\f \\t \\n \\r \\v``, space, NBSP) become one space."""
    return _WS.sub(" ", s)


_CMD_DELETE = str.maketrans("", "", "\\\"'^")
_CMD_SPACE_BEFORE = re.compile(r"\s+(?=[/(])")
_CMD_SEPARATORS = str.maketrans(",;", "  ")
_CMD_WS = re.compile(r"\s+")


def cmd_line(s: str) -> str:
    """ModSecurity's cmdLine: delete ``\\ " ' ^``, delete spaces before ``/`` and ``(``, turn
    ``,`` and ``;`` into spaces, collapse whitespace, lowercase (defeats ``c^at /e"tc/pa''sswd``)."""
    s = s.translate(_CMD_DELETE)
    s = _CMD_SPACE_BEFORE.sub("", s)
    s = s.translate(_CMD_SEPARATORS)
    return _CMD_WS.sub(" ", s).lower()


def remove_nulls(s: str) -> str:
    return s.replace("\0", "") if "\0" in s else s


def replace_nulls(s: str) -> str:
    return s.replace("\0", " ") if "\0" in s else s


_C_COMMENT = re.compile(r"/\*.*?(?:\*/|$)", re.DOTALL)


def replace_comments(s: str) -> str:
    """Each C-style comment ``/* ... */`` (an unterminated one runs to the end) becomes a space."""
    if "/*" not in s:
        return s
    return _C_COMMENT.sub(" ", s)


def normalize_path(s: str) -> str:
    """Collapse ``//``, remove ``/./`` and resolve ``x/../`` (leading ``..`` segments are kept)."""
    if "/" not in s:
        return s
    absolute = s.startswith("/")
    trailing = s.endswith("/") and len(s) > 1
    out: list[str] = []
    for part in s.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and out and out[-1] != "..":
            out.pop()
        elif part == ".." and absolute:
            continue  # above the root is the root
        else:
            out.append(part)
    result = ("/" if absolute else "") + "/".join(out)
    if trailing and out:
        result += "/"
    return result or ("/" if absolute else "")


def normalize_path_win(s: str) -> str:
    """Backslashes become slashes first, then ``normalize_path``."""
    return normalize_path(s.replace("\\", "/"))


def utf8_to_unicode(s: str) -> str:
    """Unicode compatibility normalisation (NFKC): full-width letters and brackets read as ASCII ones."""
    if s.isascii():
        return s
    return unicodedata.normalize("NFKC", s)


TRANSFORMS: dict[str, Transform] = {
    "none": none,
    "url_decode": url_decode,
    "url_decode_uni": url_decode_uni,
    "html_entity_decode": html_entity_decode,
    "js_decode": js_decode,
    "css_decode": css_decode,
    "escape_seq_decode": escape_seq_decode,
    "base64_decode": base64_decode,
    "base64_decode_ext": base64_decode_ext,
    "hex_decode": hex_decode,
    "sql_hex_decode": sql_hex_decode,
    "lowercase": lowercase,
    "compress_whitespace": compress_whitespace,
    "cmd_line": cmd_line,
    "remove_nulls": remove_nulls,
    "replace_nulls": replace_nulls,
    "replace_comments": replace_comments,
    "normalize_path": normalize_path,
    "normalize_path_win": normalize_path_win,
    "utf8_to_unicode": utf8_to_unicode,
}
TRANSFORM_NAMES = tuple(TRANSFORMS)

# Local and newline-preserving: applying them to values joined by "\n" equals joining the
# transformed values (newlines may be added, never removed).
LINE_SAFE = frozenset(
    {"none", "url_decode", "url_decode_uni", "html_entity_decode", "js_decode", "css_decode",
     "escape_seq_decode", "sql_hex_decode", "lowercase", "remove_nulls", "replace_nulls", "utf8_to_unicode"}
)  # fmt: skip
# Local, but a newline may become a space: joined evaluation stays exact only for patterns
# without line anchors.
SPACE_SAFE = frozenset({"compress_whitespace"})


def apply(chain: tuple[str, ...], s: str) -> str:
    for name in chain:
        s = TRANSFORMS[name](s)
    return s
