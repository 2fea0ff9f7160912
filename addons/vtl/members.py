"""Everything a template can do *to* a value: properties, methods, ``[index]`` and ``#set`` targets.

This is the sandbox boundary. The engine never calls ``getattr`` on a template value; it calls
:func:`get_property`, :func:`call_method`, :func:`get_index` or :func:`set_member`, which dispatch on
the value's type to the Java methods API Gateway templates use (``String.replaceAll``,
``List.size``, ``Map.keySet``...), reimplemented here. A name outside these tables is null, as an
unknown method is in Velocity; so ``$input.getClass()``, ``$util.__dict__`` or ``"".__class__``
resolve to nothing. String methods live in ``strings.py``.
"""

from __future__ import annotations

from typing import Any

from addons.vtl.errors import Abort, current
from addons.vtl.operators import java_equals
from addons.vtl.strings import STRING_METHODS, Method, NoSuchMethod, arg_int
from addons.vtl.values import (
    JavaList,
    MapEntry,
    SandboxMap,
    SandboxObject,
    is_map,
    java_str,
    map_items,
)

_NUMBER: dict[str, Method] = {
    "toString": (java_str, 0, 0),
    "intValue": (int, 0, 0),
    "longValue": (int, 0, 0),
    "doubleValue": (float, 0, 0),
    "equals": (java_equals, 1, 1),
}

_BOOLEAN: dict[str, Method] = {
    "toString": (java_str, 0, 0),
    "booleanValue": (lambda b: b, 0, 0),
    "equals": (java_equals, 1, 1),
}


def _list_get(items: list[Any], index: Any) -> Any:
    i = arg_int(index)
    if not 0 <= i < len(items):
        raise Abort("List.get(): index out of range")
    return items[i]


def _list_set(items: list[Any], index: Any, value: Any) -> Any:
    previous = _list_get(items, index)
    items[index] = value
    return previous


def _list_add(items: list[Any], value: Any) -> bool:
    current().check_items(len(items) + 1)
    items.append(value)
    return True  # List.add returns true, and `$list.add(x)` prints it, as on API Gateway


def _list_add_all(items: list[Any], more: Any) -> bool:
    if not isinstance(more, list):
        raise NoSuchMethod
    current().check_items(len(items) + len(more))
    items.extend(more)
    return bool(more)


def _list_index_of(items: list[Any], value: Any) -> int:
    return next((i for i, x in enumerate(items) if java_equals(x, value)), -1)


def _sub_list(items: list[Any], begin: Any, end: Any) -> JavaList:
    b, e = arg_int(begin), arg_int(end)
    if not 0 <= b <= e <= len(items):
        raise Abort("List.subList(): index out of range")
    return JavaList(items[b:e])


_LIST: dict[str, Method] = {
    "size": (len, 0, 0),
    "isEmpty": (lambda xs: not xs, 0, 0),
    "get": (_list_get, 1, 1),
    "set": (_list_set, 2, 2),
    "add": (_list_add, 1, 1),
    "addAll": (_list_add_all, 1, 1),
    "contains": (lambda xs, v: _list_index_of(xs, v) >= 0, 1, 1),
    "indexOf": (_list_index_of, 1, 1),
    "subList": (_sub_list, 2, 2),
    "toString": (java_str, 0, 0),
    "equals": (java_equals, 1, 1),
}


def map_get(mapping: Any, key: Any) -> Any:
    if type(mapping) is dict:
        try:
            return mapping.get(key)
        except TypeError:  # unhashable key
            return None
    return mapping.get(key)


def map_put(mapping: Any, key: Any, value: Any) -> Any:
    if type(mapping) is not dict:
        return mapping.put(key, value)
    previous = map_get(mapping, key)
    try:
        mapping[key] = value
    except TypeError:
        raise Abort("map keys must be strings, numbers or booleans") from None
    current().check_items(len(mapping))
    return previous


def _map_remove(mapping: Any, key: Any) -> Any:
    if type(mapping) is not dict:
        return mapping.remove(key)
    try:
        return mapping.pop(key, None)
    except TypeError:
        return None


def _map_put_all(mapping: Any, other: Any) -> None:
    if not is_map(other):
        raise NoSuchMethod
    for key, value in map_items(other):
        map_put(mapping, key, value)


def _map_contains_key(mapping: Any, key: Any) -> bool:
    try:
        return key in mapping
    except TypeError:
        return False


_MAP: dict[str, Method] = {
    "get": (map_get, 1, 1),
    "put": (map_put, 2, 2),
    "putAll": (_map_put_all, 1, 1),
    "remove": (_map_remove, 1, 1),
    "containsKey": (_map_contains_key, 1, 1),
    "containsValue": (lambda m, v: any(java_equals(x, v) for _, x in map_items(m)), 1, 1),
    "keySet": (lambda m: JavaList(m.keys()), 0, 0),
    "values": (lambda m: JavaList(x for _, x in map_items(m)), 0, 0),
    "entrySet": (lambda m: JavaList(MapEntry(k, v) for k, v in map_items(m)), 0, 0),
    "size": (len, 0, 0),
    "isEmpty": (lambda m: len(m) == 0, 0, 0),
    "toString": (java_str, 0, 0),
    "equals": (java_equals, 1, 1),
}

_ENTRY: dict[str, Method] = {
    "getKey": (lambda e: e.key, 0, 0),
    "getValue": (lambda e: e.value, 0, 0),
    "toString": (java_str, 0, 0),
}


def _table(value: Any) -> dict[str, Method] | None:
    kind = type(value)
    if kind is str:
        return STRING_METHODS
    if kind is list or kind is JavaList:
        return _LIST
    if kind is dict or isinstance(value, SandboxMap):
        return _MAP
    if kind is int or kind is float:
        return _NUMBER
    if kind is bool:
        return _BOOLEAN
    if kind is MapEntry:
        return _ENTRY
    return None


def call_method(target: Any, name: str, args: list[Any]) -> Any:
    """``$target.name(args)``; an unknown method, wrong arity or wrong argument kinds give null."""
    if isinstance(target, SandboxObject):
        return target.vtl_call(name, args)
    table = _table(target)
    method = table.get(name) if table is not None else None
    if method is None:
        return None
    func, fewest, most = method
    if not fewest <= len(args) <= most:
        return None
    try:
        return func(target, *args)
    except NoSuchMethod:
        return None


def get_property(target: Any, name: str) -> Any:
    """``$target.name``: a map key, a ``$input``/``$util`` member or an entry's key/value; else null."""
    if type(target) is dict:
        return target.get(name)
    if isinstance(target, SandboxMap):
        return target.get(name)
    if isinstance(target, SandboxObject):
        return target.vtl_property(name)
    if type(target) is MapEntry:
        if name == "key":
            return target.key
        if name == "value":
            return target.value
    return None


def get_index(target: Any, index: Any) -> Any:
    """``$target[index]``: list position or map key; anything else (or out of range) is null."""
    if isinstance(target, list):
        if type(index) is int and 0 <= index < len(target):
            return target[index]
        return None
    if is_map(target):
        return map_get(target, index)
    return None


def set_member(target: Any, key: Any, value: Any) -> None:
    """The last step of ``#set($a.b = v)`` / ``#set($a[k] = v)``. Targets that cannot hold members are
    left alone, as Velocity logs and carries on."""
    if isinstance(target, list):
        if type(key) is not int or not 0 <= key < len(target):
            raise Abort("#set: list index out of range")
        target[key] = value
    elif is_map(target):
        map_put(target, key, value)


def iteration_items(value: Any) -> list[Any]:
    """What ``#foreach`` walks: list items, or a map's *values* (Velocity iterates a Map's values)."""
    if isinstance(value, list):
        return list(value)
    if is_map(value):
        return [v for _, v in map_items(value)]
    return []
