"""The JSONPath subset API Gateway templates use in ``$input.path(x)`` and ``$input.json(x)``.

Supported: ``$``, ``.name``, ``['name']`` / ``["name"]``, ``[n]`` (negative counts from the end, as in
Jayway JsonPath), ``[*]`` / ``.*`` and ``..name`` (deep scan). A path with a wildcard or deep scan is
*indefinite* and yields the list of matches; a definite path yields one value or nothing. Filters,
slices and functions are rejected with an error that does not echo the path (it may come from the
request).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from addons.vtl.errors import Abort

MISSING: Any = object()

_KEY, _INDEX, _WILD, _DEEP = "key", "index", "wild", "deep"


@dataclass(frozen=True, slots=True)
class JsonPath:
    steps: tuple[tuple[str, Any], ...]
    definite: bool


def _unsupported() -> Abort:
    return Abort("unsupported JSONPath expression (supported: $, .name, ['name'], [n], [*], ..name)")


def _read_name(text: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(text) and text[j] not in ".[":
        j += 1
    if j == i:
        raise _unsupported()
    return text[i:j], j


def _read_bracket(text: str, i: int) -> tuple[tuple[str, Any], int]:
    """Parse ``[...]`` starting at the ``[``; return the step and the index after ``]``."""
    i += 1
    if i < len(text) and text[i] in "'\"":
        quote = text[i]
        end = text.find(quote, i + 1)
        if end < 0 or end + 1 >= len(text) or text[end + 1] != "]":
            raise _unsupported()
        return (_KEY, text[i + 1 : end]), end + 2
    end = text.find("]", i)
    if end < 0:
        raise _unsupported()
    inner = text[i:end].strip()
    if inner == "*":
        return (_WILD, None), end + 1
    try:
        return (_INDEX, int(inner)), end + 1
    except ValueError:
        raise _unsupported() from None


@lru_cache(maxsize=512)
def compile_path(text: str) -> JsonPath:
    text = text.strip() or "$"
    if not text.startswith("$"):
        raise _unsupported()
    steps: list[tuple[str, Any]] = []
    i = 1
    while i < len(text):
        if text.startswith("..", i):
            name, i = _read_name(text, i + 2)
            steps.append((_DEEP, name))
        elif text[i] == ".":
            if text.startswith("*", i + 1):
                steps.append((_WILD, None))
                i += 2
            else:
                name, i = _read_name(text, i + 1)
                steps.append((_KEY, name))
        elif text[i] == "[":
            step, i = _read_bracket(text, i)
            steps.append(step)
        else:
            raise _unsupported()
    definite = all(kind in (_KEY, _INDEX) for kind, _ in steps)
    return JsonPath(tuple(steps), definite)


def _deep_scan(node: Any, name: str, out: list[Any]) -> None:
    stack = [node]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if name in item:
                out.append(item[name])
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def evaluate(path: JsonPath, document: Any) -> Any:
    """Definite paths return the value or :data:`MISSING`; indefinite ones a (JSON) list of matches."""
    nodes = [document]
    for kind, arg in path.steps:
        found: list[Any] = []
        for node in nodes:
            if kind == _KEY:
                if type(node) is dict and arg in node:
                    found.append(node[arg])
            elif kind == _INDEX:
                if isinstance(node, list) and -len(node) <= arg < len(node):
                    found.append(node[arg])
            elif kind == _WILD:
                if type(node) is dict:
                    found.extend(node.values())
                elif isinstance(node, list):
                    found.extend(node)
            else:
                _deep_scan(node, arg, found)
        nodes = found
    if path.definite:
        return nodes[0] if nodes else MISSING
    return nodes
