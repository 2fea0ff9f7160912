"""Java's String methods for templates (``length``, ``replaceAll``, ``split``...), on RE2.

Regular expressions use java.util.regex syntax and run on RE2, which matches in linear time, so
no template can be made to backtrack for ever over request data. Errors never quote the pattern
or the text: either may come from the request.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import re2

from addons.vtl.errors import Abort, current
from addons.vtl.values import JavaList, java_str

Method = tuple[Callable[..., Any], int, int]  # implementation, fewest and most arguments

_JAVA_WHITESPACE = "".join(chr(c) for c in range(33))  # String.trim() strips every char <= ' '


class NoSuchMethod(Exception):
    """Arguments of the wrong kind: Velocity finds no matching method and the call yields null."""


def arg_str(value: Any) -> str:
    if type(value) is not str:
        raise NoSuchMethod
    return value


def arg_int(value: Any) -> int:
    if type(value) is not int:
        raise NoSuchMethod
    return value


def _text_arg(value: Any) -> str:
    """A CharSequence argument; Velocity passes numbers through ``toString()`` when no overload fits."""
    return value if type(value) is str else java_str(value)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@lru_cache(maxsize=256)
def _regex(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error:
        raise Abort("a regular expression is not supported (RE2 syntax: no look-around or back-references)") from None


@lru_cache(maxsize=256)
def _replacement(template: str) -> tuple[str | int, ...]:
    """Parse Java's replacement syntax: ``$n`` is group n, ``\\x`` is a literal x."""
    parts: list[str | int] = []
    literal: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if c == "\\":
            if i + 1 >= len(template):
                raise Abort("a replacement string ends with a lone backslash")
            literal.append(template[i + 1])
            i += 2
        elif c == "$":
            j = i + 1
            while j < len(template) and template[j].isdigit():
                j += 1
            if j == i + 1:
                raise Abort("a replacement string has '$' without a group number")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(int(template[i + 1 : j]))
            i = j
        else:
            literal.append(c)
            i += 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def _replace_regex(text: str, pattern: str, replacement: str, count: int) -> str:
    regex = _regex(pattern)
    parts = _replacement(replacement)
    budget = current()
    grown = [len(text)]

    def expand(match: Any) -> str:
        pieces = []
        for part in parts:
            if type(part) is int:
                if part > regex.groups:
                    raise Abort("a replacement string names a group the pattern does not have")
                pieces.append(match.group(part) or "")
            else:
                pieces.append(part)
        out = "".join(pieces)
        grown[0] += len(out)
        budget.check_chars(grown[0])
        return out

    return regex.sub(expand, text, count=count)  # type: ignore[no-any-return]


def _split(text: str, pattern: str) -> JavaList:
    pieces = JavaList()
    start = 0
    for match in _regex(pattern).finditer(text):
        begin, end = match.span()
        if end == 0:  # a zero-width match at the very start yields no leading empty piece (Java 8+)
            continue
        pieces.append(text[start:begin])
        start = end
    pieces.append(text[start:])
    while len(pieces) > 1 and pieces[-1] == "":  # Java drops trailing empty strings
        pieces.pop()
    if pieces == [""] and text:
        pieces.clear()
    current().check_items(len(pieces))
    return pieces


def _replace_literal(text: str, old: Any, new: Any) -> str:
    old_s, new_s = _text_arg(old), _text_arg(new)
    hits = text.count(old_s) if old_s else len(text) + 1
    current().check_chars(len(text) + hits * len(new_s))
    return text.replace(old_s, new_s)


def _substring(text: str, begin: Any, end: Any = None) -> str:
    b = arg_int(begin)
    e = len(text) if end is None else arg_int(end)
    if not 0 <= b <= e <= len(text):
        raise Abort("String.substring(): index out of range")
    return text[b:e]


def _char_at(text: str, index: Any) -> str:
    i = arg_int(index)
    if not 0 <= i < len(text):
        raise Abort("String.charAt(): index out of range")
    return text[i]


def _concat(text: str, other: Any) -> str:
    other_s = arg_str(other)
    current().check_chars(len(text) + len(other_s))
    return text + other_s


STRING_METHODS: dict[str, Method] = {
    "length": (len, 0, 0),
    "isEmpty": (lambda s: s == "", 0, 0),
    "contains": (lambda s, x: _text_arg(x) in s, 1, 1),
    "startsWith": (lambda s, p, off=0: s.startswith(arg_str(p), max(arg_int(off), 0)), 1, 2),
    "endsWith": (lambda s, p: s.endswith(arg_str(p)), 1, 1),
    "indexOf": (lambda s, x, start=0: s.find(_text_arg(x), max(arg_int(start), 0)), 1, 2),
    "lastIndexOf": (lambda s, x: s.rfind(_text_arg(x)), 1, 1),
    "substring": (_substring, 1, 2),
    "charAt": (_char_at, 1, 1),
    "concat": (_concat, 1, 1),
    "toLowerCase": (str.lower, 0, 0),
    "toUpperCase": (str.upper, 0, 0),
    "trim": (lambda s: s.strip(_JAVA_WHITESPACE), 0, 0),
    "replace": (_replace_literal, 2, 2),
    "replaceAll": (lambda s, p, r: _replace_regex(s, arg_str(p), arg_str(r), 0), 2, 2),
    "replaceFirst": (lambda s, p, r: _replace_regex(s, arg_str(p), arg_str(r), 1), 2, 2),
    "matches": (lambda s, p: _regex(arg_str(p)).fullmatch(s) is not None, 1, 1),
    "split": (lambda s, p: _split(s, arg_str(p)), 1, 1),
    "equals": (lambda s, o: type(o) is str and s == o, 1, 1),
    "equalsIgnoreCase": (lambda s, o: type(o) is str and s.casefold() == o.casefold(), 1, 1),
    "toString": (lambda s: s, 0, 0),
}
