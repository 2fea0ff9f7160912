"""The values a template can hold, and how Velocity (as API Gateway runs it) prints them.

A template only ever sees: None, bool, int, float, str, plain ``list``/``dict`` (JSON payloads,
``$util.parseJson`` results, ``{}`` literals), :class:`JavaList` (lists the template builds),
:class:`SandboxMap` views (``$context``, ``$stageVariables``, ``$input.params()``, overrides),
:class:`MapEntry` and :class:`SandboxObject` (``$input``, ``$util``). Members of these are reached
only through the tables in ``members.py``; operators are in ``operators.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from addons.vtl.errors import Abort, TemplateLimitError, current

_PRINT_DEPTH = 64


class JavaList(list[Any]):
    """A list built by the template (``[a, b]``, ranges, ``keySet()``): Java's ArrayList prints ``[a, b]``.

    Lists that come from JSON stay plain ``list`` and print as compact JSON, as API Gateway's do.
    """

    __slots__ = ()


class MapEntry:
    """One element of ``$map.entrySet()``."""

    __slots__ = ("key", "value")

    def __init__(self, key: Any, value: Any) -> None:
        self.key = key
        self.value = value


class SandboxObject:
    """``$input`` and ``$util``: objects whose members are an explicit allow-list."""

    __slots__ = ()

    def vtl_property(self, name: str) -> Any:
        return None

    def vtl_call(self, name: str, args: list[Any]) -> Any:
        return None


class SandboxMap:
    """A map the template may read (and write, per subclass) without reaching the Python object behind it."""

    __slots__ = ()
    hidden = False  # prints as null: API Gateway's ``$context.authorizer.claims``

    def get(self, key: Any) -> Any:
        raise NotImplementedError

    def put(self, key: Any, value: Any) -> Any:
        raise NotImplementedError

    def remove(self, key: Any) -> Any:
        raise NotImplementedError

    def keys(self) -> list[Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())


_MISSING = object()


def adopt(raw: Any) -> Any:
    """Turn a value handed in by the pipeline into one the sandbox allows, without copying maps."""
    if raw is None or isinstance(raw, str | bool | int | float):
        return raw
    if isinstance(raw, Mapping):
        return CowMap(raw)
    if isinstance(raw, list | tuple):
        return JavaList(adopt(x) for x in raw)
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return str(raw)


class CowMap(SandboxMap):
    """Copy-on-write view of a pipeline mapping: writes land in a per-render overlay, never in the source.

    Nested mappings are wrapped on first read and kept in the overlay, so a template that writes
    ``#set($context.identity.x = 1)`` reads its own write back, as with a Java map, and the next render
    starts clean.
    """

    __slots__ = ("_base", "_gone", "_over", "_role", "hidden")

    def __init__(self, base: Mapping[Any, Any], *, role: str = "", hidden: bool = False) -> None:
        self._base = base
        self._over: dict[Any, Any] = {}
        self._gone: set[Any] = set()
        self._role = role  # "context" for $context itself, "authorizer" for $context.authorizer
        self.hidden = hidden

    def get(self, key: Any) -> Any:
        over = self._over
        try:
            if key in over:
                return over[key]
            if key in self._gone:
                return None
            raw = self._base.get(key, _MISSING)
        except TypeError:  # unhashable key
            return None
        if raw is _MISSING:
            return None
        value = self._wrap(key, raw)
        if isinstance(value, CowMap | JavaList):
            over[key] = value
        return value

    def _wrap(self, key: Any, raw: Any) -> Any:
        if self._role == "context" and key == "authorizer" and isinstance(raw, Mapping):
            return CowMap(raw, role="authorizer")
        if self._role == "authorizer":
            # Lambda authorizer context values arrive stringified (1 -> "1", true -> "true"); Cognito
            # claims stay a map whose properties work, while the map itself prints as null.
            if key == "claims" and isinstance(raw, Mapping):
                return CowMap(raw, hidden=True)
            if isinstance(raw, bool | int | float):
                return java_str(raw)
        return adopt(raw)

    def put(self, key: Any, value: Any) -> Any:
        previous = self.get(key)
        try:
            self._over[key] = value
        except TypeError:
            raise Abort("map keys must be strings, numbers or booleans") from None
        self._gone.discard(key)
        current().check_items(len(self._over))
        return previous

    def remove(self, key: Any) -> Any:
        previous = self.get(key)
        try:
            self._over.pop(key, None)
            self._gone.add(key)
        except TypeError:
            return None
        return previous

    def keys(self) -> list[Any]:
        keys = [k for k in self._base if k not in self._gone]
        keys.extend(k for k in self._over if k not in self._base)
        return keys

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._over or (key not in self._gone and key in self._base)
        except TypeError:
            return False


# ----------------------------------------------------------------------------------------------
# Printing


def to_text(value: Any) -> str:
    """What ``$ref`` prints. API Gateway prints a missing or null reference as empty text."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    return java_str(value)


def java_str(value: Any, depth: int = 0) -> str:
    """Java's ``toString()`` of the value Velocity would hold (nested nulls print as ``null``)."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return java_double(value)
    if depth > _PRINT_DEPTH:
        raise Abort("a value nests too deeply to print")
    if kind is list:  # a JSON array (json-smart's JSONArray prints itself as JSON)
        return json_text(value)
    if kind is JavaList:
        return "[" + ", ".join(java_str(x, depth + 1) for x in value) + "]"
    if kind is dict or isinstance(value, SandboxMap):
        if kind is not dict and value.hidden:
            return "null"
        return "{" + ", ".join(f"{java_str(k, depth + 1)}={java_str(v, depth + 1)}" for k, v in map_items(value)) + "}"
    if kind is MapEntry:
        return f"{java_str(value.key, depth + 1)}={java_str(value.value, depth + 1)}"
    if isinstance(value, SandboxObject):
        return "{}"  # what API Gateway prints for $input, $util and their methods named without ()
    return ""


def java_double(value: float) -> str:
    """``Double.toString``: plain between 1e-3 and 1e7, else ``d.dddE±n``; always a fraction digit."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # position of the decimal point within text
    if 1e-3 <= abs(value) < 1e7:
        if point <= 0:
            body = "0." + "0" * -point + text
        elif point >= len(text):
            body = text + "0" * (point - len(text)) + ".0"
        else:
            body = text[:point] + "." + text[point:]
    else:
        body = f"{text[0]}.{text[1:] or '0'}E{point - 1}"
    return ("-" if sign else "") + body


def _json_default(value: Any) -> Any:
    if isinstance(value, SandboxMap):
        return None if value.hidden else {java_str(k): value.get(k) for k in value.keys()}
    if type(value) is MapEntry:
        return {java_str(value.key): value.value}
    if isinstance(value, SandboxObject):
        return {}
    return to_text(value)


def json_text(value: Any) -> str:
    """Compact JSON, as ``$input.json()`` and JSON arrays print."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    except ValueError:  # circular reference
        raise Abort("a value refers to itself and cannot be printed") from None
    except RecursionError:
        raise Abort("a value nests too deeply to print", TemplateLimitError) from None


def is_map(value: Any) -> bool:
    return type(value) is dict or isinstance(value, SandboxMap)


def map_items(value: Any) -> list[tuple[Any, Any]]:
    if type(value) is dict:
        return list(value.items())
    return [(k, value.get(k)) for k in value.keys()]
