"""Velocity 1.7's conditions, comparisons and arithmetic, as API Gateway evaluates them.

Operands of the wrong kind give null rather than a Python error (``"a" - 1``), division truncates
toward zero as in Java, and integers are bounded so a squaring loop cannot eat the machine.
"""

from __future__ import annotations

import math
from typing import Any

from addons.vtl.errors import Abort, TemplateLimitError, current
from addons.vtl.values import is_map, java_str, map_items


def truthy(value: Any) -> bool:
    """Velocity 1.7: only null and false are false. API Gateway turns a missing reference into an empty
    string first, so ``#if($missing)`` is true there (and here)."""
    return value is not None and value is not False


def is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float


def java_equals(a: Any, b: Any) -> bool:
    """``a.equals(b)``: type-strict for scalars, element-wise for lists and maps."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(java_equals(x, y) for x, y in zip(a, b, strict=True))
    if is_map(a) and is_map(b):
        left, right = dict(map_items(a)), dict(map_items(b))
        return left.keys() == right.keys() and all(java_equals(v, right[k]) for k, v in left.items())
    if type(a) is not type(b):
        return False
    return bool(a == b)


def vtl_equals(a: Any, b: Any) -> bool:
    """Velocity's ``==``: numbers by value; same kinds by ``equals``; otherwise by their ``toString()``."""
    if is_number(a) and is_number(b):
        return bool(a == b)
    if a is None or b is None:
        return a is b
    if (isinstance(a, list) and isinstance(b, list)) or (is_map(a) and is_map(b)) or type(a) is type(b):
        return java_equals(a, b)
    return java_str(a) == java_str(b)


_INT_BOUND = 2**256  # far past Java's long; stops a squaring loop from building huge integers


def _int_result(value: int) -> int:
    if -_INT_BOUND < value < _INT_BOUND:
        return value
    raise Abort("an integer grew too large", TemplateLimitError)


def _java_div(a: Any, b: Any) -> Any:
    if b == 0:
        return None  # Velocity logs the error and yields null
    if type(a) is int and type(b) is int:
        quotient = abs(a) // abs(b)
        return quotient if (a >= 0) == (b >= 0) else -quotient  # Java truncates toward zero
    return a / b


def _java_mod(a: Any, b: Any) -> Any:
    if b == 0:
        return None
    if type(a) is int and type(b) is int:
        return a - b * _java_div(a, b)
    return math.fmod(a, b)


def binary(op: str, a: Any, b: Any) -> Any:
    """Apply a non-logical binary operator; operands of the wrong kind give null, as in Velocity."""
    if op == "==":
        return vtl_equals(a, b)
    if op == "!=":
        return not vtl_equals(a, b)
    if op == "+" and (type(a) is str or type(b) is str):
        left, right = java_str(a), java_str(b)
        current().check_chars(len(left) + len(right))
        return left + right
    if not (is_number(a) and is_number(b)):
        return False if op in ("<", ">", "<=", ">=") else None
    if op == "<":
        return a < b
    if op == ">":
        return a > b
    if op == "<=":
        return a <= b
    if op == ">=":
        return a >= b
    if op == "+":
        result = a + b
    elif op == "-":
        result = a - b
    elif op == "*":
        result = a * b
    elif op == "/":
        result = _java_div(a, b)
    else:  # "%"
        result = _java_mod(a, b)
    return _int_result(result) if type(result) is int else result
