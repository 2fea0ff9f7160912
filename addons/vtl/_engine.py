"""The only module that touches airspeed (airspeed-ext): parse once, then make the parse tree safe.

airspeed evaluates ``$a.b`` with ``getattr`` on whatever object it holds, loops without bounds and
implements Velocity's operators with Python's. After parsing we walk the element tree once and
replace, per node, the few behaviours that matter (instance attributes; nothing global is patched,
so other users of the module are unaffected):

* name and method lookup go through ``members.py`` (the sandbox boundary);
* ``#foreach`` counts iterations against the per-render budget, checks the deadline, iterates a
  map's values and scopes its variables the way Velocity 1.7 does (``#set`` stays global);
* expressions use Velocity's operators, precedence and short-circuit ``&&``/``||``;
* printing follows API Gateway (null -> empty, lists and maps as Java/JSON print them);
* string interpolation and ``#define`` output are size-bounded;
* directives API Gateway does not offer (``#macro``, ``#evaluate``, ``#include``, ``#parse``,
  ``#return``) are compile errors, and calls of undefined macros print literally, as on AWS.
"""

from __future__ import annotations

import types
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import airspeed.operators as _ops  # type: ignore[import-untyped]

from addons.vtl.errors import Abort, TemplateError, TemplateLimitError, current
from addons.vtl.members import call_method, get_index, get_property, iteration_items, set_member
from addons.vtl.operators import binary, truthy
from addons.vtl.values import JavaList, to_text

_UNSUPPORTED = {
    _ops.MacroDefinition: "#macro is not supported by API Gateway mapping templates",
    _ops.EvaluateDirective: "#evaluate is not supported by API Gateway mapping templates",
    _ops.IncludeDirective: "#include is not supported (templates cannot read files)",
    _ops.ParseDirective: "#parse is not supported (templates cannot read files)",
    _ops.ReturnDirective: "#return is not supported by API Gateway mapping templates (it is AppSync's)",
}

_OPERATORS = {
    **{op: op for op in ("*", "/", "%", "+", "-", "<", ">", "<=", ">=", "==", "!=", "&&", "||")},
    **{"lt": "<", "gt": ">", "le": "<=", "ge": ">=", "eq": "==", "ne": "!=", "and": "&&", "or": "||"},
}
_PRECEDENCE = {"*": 4, "/": 4, "%": 4, "+": 5, "-": 5, "<": 7, ">": 7, "<=": 7, ">=": 7}
_PRECEDENCE |= {"==": 8, "!=": 8, "&&": 12, "||": 13}  # lower binds tighter
_LOOP_NAMES = ("foreach", "velocityCount", "velocityHasNext")
_UNSET = object()
NULL_LOADER = _ops.NullLoader()


class CompileProblem(Exception):
    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


class Output:
    """The stream airspeed writes to; bounded so no template can build an unbounded string."""

    __slots__ = ("_limit", "_parts", "_size", "stop")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[str] = []
        self._size = 0
        self.stop = False  # set by #stop

    def write(self, text: str) -> None:
        if self.stop:
            return
        self._size += len(text)
        if self._size > self._limit:
            current().check_chars(self._size)
        self._parts.append(text)

    def text(self) -> str:
        return "".join(self._parts)


# ----------------------------------------------------------------------------------------------
# Replacement behaviours, installed per node as bound methods


def _name_or_call(self: Any, target: Any, loader: Any, scope: Any) -> Any:
    if type(target) is dict and self.parameters is None:  # fast path: $elem.title.S over JSON
        value = target.get(self.name)
    elif isinstance(target, _ops.LocalNamespace):  # the first name of a reference: a variable
        try:
            value = target[self.name]
        except KeyError:
            value = None
        if isinstance(value, _ops.DefineDefinition):
            value = _render_define(value, scope, loader)
            if self.parameters is not None:  # API Gateway prints "$block()" as the block then "()"
                value += self.parameters.my_text()
    elif self.parameters is not None:
        value = call_method(target, self.name, self.parameters.calculate(scope, loader))
    else:
        value = get_property(target, self.name)
    if self.index is not None and value is not None:
        value = get_index(value, self.index.calculate(scope, loader))
    return "" if value is None else value  # API Gateway turns null into empty text


def _sub_expression(self: Any, target: Any, loader: Any, scope: Any) -> Any:
    expression = self.expression
    if not isinstance(expression, _ops.ArrayIndex):
        return expression.calculate(target, loader, scope)
    value = get_index(target, expression.calculate(scope, loader))
    value = "" if value is None else value
    rest = getattr(self, "subexpression", None)
    return rest.calculate(value, loader, scope) if rest is not None else value


def _render_define(define: Any, scope: Any, loader: Any) -> str:
    state = current()
    state.check_time()
    out = Output(state.limits.max_output_chars)
    define.block.evaluate(out, scope, loader)
    return out.text()


def _foreach(self: Any, stream: Any, scope: Any, loader: Any) -> None:
    items = iteration_items(self.value.calculate(scope, loader))
    if not items:
        return
    state = current()
    names = (self.loop_var_name, *_LOOP_NAMES)
    saved = [dict.get(scope, name, _UNSET) for name in names]
    last = len(items) - 1
    try:
        for index, item in enumerate(items):
            state.count_iteration()
            if getattr(stream, "stop", False):
                break
            has_next = index < last
            dict.__setitem__(scope, self.loop_var_name, item)
            dict.__setitem__(
                scope,
                "foreach",
                {"count": index + 1, "index": index, "hasNext": has_next, "first": index == 0, "last": not has_next},
            )
            dict.__setitem__(scope, "velocityCount", index + 1)
            dict.__setitem__(scope, "velocityHasNext", has_next)
            self.block.evaluate(stream, scope, loader)
    finally:  # Velocity restores the loop variable (and $foreach) once the loop ends
        for name, old in zip(names, saved, strict=True):
            if old is _UNSET:
                dict.pop(scope, name, None)
            else:
                dict.__setitem__(scope, name, old)


def _assignment(self: Any, stream: Any, scope: Any, loader: Any) -> None:
    value = self.value.calculate(scope, loader)
    if not self.terms:
        while isinstance(scope.parent, _ops.LocalNamespace):  # #set is global in Velocity 1.7
            scope = scope.parent
        dict.__setitem__(scope, self.root_term, value)
        return
    try:
        target = scope[self.root_term]
    except KeyError:
        return
    for term in self.terms[:-1]:
        key = term.calculate(scope, loader)
        target = get_property(target, key) if isinstance(term.term, _ops.DotDictAccessTerm) else get_index(target, key)
        if target is None:
            return
    set_member(target, self.terms[-1].calculate(scope, loader), value)


def _evaluate_tree(node: Any, scope: Any, loader: Any) -> Any:
    if type(node) is tuple:
        op, left, right = node
        if op == "&&":
            return truthy(_evaluate_tree(left, scope, loader)) and truthy(_evaluate_tree(right, scope, loader))
        if op == "||":
            return truthy(_evaluate_tree(left, scope, loader)) or truthy(_evaluate_tree(right, scope, loader))
        return binary(op, _evaluate_tree(left, scope, loader), _evaluate_tree(right, scope, loader))
    return node.calculate(scope, loader)


def _expression(self: Any, scope: Any, loader: Any) -> Any:
    return _evaluate_tree(self.vtl_tree, scope, loader)


def _condition(self: Any, scope: Any, loader: Any) -> bool:
    return truthy(self.expression.calculate(scope, loader))


def _negation(self: Any, scope: Any, loader: Any) -> bool:
    return not truthy(self.value.calculate(scope, loader))


def _print_reference(self: Any, stream: Any, scope: Any, loader: Any) -> None:
    if self.expression is None:
        stream.write(self.my_text())
        return
    value = self.expression.calculate(scope, loader)
    if self.alternate is not None and (value is None or value == ""):
        value = self.alternate.calculate(scope, loader)
    stream.write(to_text(value))


def _interpolate(self: Any, scope: Any, loader: Any) -> str:
    out = Output(current().limits.max_output_chars)
    self.block.evaluate(out, scope, loader)
    return out.text()


def _array_literal(self: Any, scope: Any, loader: Any) -> JavaList:
    values = self.values
    if not isinstance(values, _ops.Range):
        return JavaList(values.calculate(scope, loader))
    first, last = values.value1.calculate(scope, loader), values.value2.calculate(scope, loader)
    if type(first) is not int or type(last) is not int:
        raise Abort("a range [a..b] needs integer bounds")
    current().check_items(abs(last - first) + 1)
    step = 1 if last >= first else -1
    return JavaList(range(first, last + step, step))


def _print_literally(self: Any, stream: Any, scope: Any, loader: Any) -> None:
    stream.write(self.my_text())  # an undefined macro call is printed as written (Velocity and AWS)


_INSTALL: dict[Any, tuple[str, Callable[..., Any]]] = {
    _ops.NameOrCall: ("calculate", _name_or_call),
    _ops.SubExpression: ("calculate", _sub_expression),
    _ops.ForeachDirective: ("evaluate_raw", _foreach),
    _ops.Assignment: ("evaluate_raw", _assignment),
    _ops.Expression: ("calculate", _expression),
    _ops.Condition: ("calculate", _condition),
    _ops.UnaryOperatorValue: ("calculate", _negation),
    _ops.FormalReference: ("evaluate_raw", _print_reference),
    _ops.InterpolatedStringLiteral: ("calculate", _interpolate),
    _ops.ArrayLiteral: ("calculate", _array_literal),
    _ops.MacroCall: ("evaluate_raw", _print_literally),
}


# ----------------------------------------------------------------------------------------------
# Compilation


def _build_tree(items: list[Any], line: int) -> Any:
    """Precedence climbing over airspeed's flat [value, op, value, ...] list, done once per template."""
    operands: list[Any] = [items[0]]
    pending: list[str] = []

    def reduce() -> None:
        op = pending.pop()
        right = operands.pop()
        operands.append((op, operands.pop(), right))

    for position in range(1, len(items), 2):
        op = _OPERATORS.get(items[position].my_text().strip())
        if op is None:
            raise CompileProblem("unknown operator", line)
        while pending and _PRECEDENCE[pending[-1]] <= _PRECEDENCE[op]:
            reduce()
        pending.append(op)
        operands.append(items[position + 1])
    while pending:
        reduce()
    return operands[0]


def _newlines(text: str) -> list[int]:
    return [i for i, c in enumerate(text) if c == "\n"]


def _walk(root: Any, text: str) -> list[tuple[Any, int]]:
    """Every element with its 1-based line (elements inside "..." strings count from the literal)."""
    found: list[tuple[Any, int]] = []
    seen: set[int] = set()
    stack: list[tuple[Any, list[int], int]] = [(root, _newlines(text), 1)]
    while stack:
        obj, offsets, base = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        line = base + bisect_left(offsets, obj.start)
        found.append((obj, line))
        for attr, value in vars(obj).items():
            if attr == "block" and isinstance(obj, _ops.InterpolatedStringLiteral):
                stack.append((value, _newlines(obj.value), line))
                continue
            pending = [value]
            while pending:
                item = pending.pop()
                if isinstance(item, _ops._Element):
                    stack.append((item, offsets, base))
                elif isinstance(item, list):
                    pending.extend(item)
                elif isinstance(item, dict):
                    pending.extend(item.keys())
                    pending.extend(item.values())
                elif isinstance(item, types.MethodType) and isinstance(item.__self__, _ops._Element):
                    pending.append(item.__self__)
    return found


def compile_tree(text: str) -> tuple[Any, dict[int, int]]:
    """Parse and harden ``text``; return the root element and a map from element id to line."""
    try:
        root = _ops.TemplateBody("<template>", text)
    except _ops.TemplateSyntaxError as exc:
        expected = str(exc).split(": ", 1)[-1]
        raise CompileProblem(f"syntax error at column {exc.column}: {expected}", exc.line) from None
    except RecursionError:
        raise CompileProblem("the template nests too deeply to parse") from None
    except Exception as exc:  # airspeed's parser raises assorted errors on odd input
        raise CompileProblem(f"the template could not be parsed ({type(exc).__name__})") from None
    elements = _walk(root, text)
    lines: dict[int, int] = {}
    for element, line in elements:
        lines[id(element)] = line
        kind = type(element)
        if kind in _UNSUPPORTED:
            raise CompileProblem(_UNSUPPORTED[kind], line)
        if kind is _ops.DefineDefinition and element.arg_names:
            raise CompileProblem("#define takes no arguments", line)
        if kind is _ops.Expression:
            element.vtl_tree = _build_tree(element.expression, line)
        installed = _INSTALL.get(kind)
        if installed is not None:
            setattr(element, installed[0], types.MethodType(installed[1], element))
    for element, _ in elements:  # methods airspeed bound at parse time must now reach our versions
        for attr, value in list(vars(element).items()):
            if isinstance(value, types.MethodType) and value.__func__.__module__ == _ops.__name__:
                setattr(element, attr, getattr(value.__self__, value.__func__.__name__))
    return root, lines


# ----------------------------------------------------------------------------------------------
# Rendering


def evaluate(root: Any, variables: dict[str, Any], out: Output) -> None:
    root.evaluate(out, _ops.LocalNamespace(variables), NULL_LOADER)


def explain(exc: Exception, lines: dict[int, int]) -> tuple[str, type[TemplateError], int | None]:
    """Turn whatever a render raised into (message, error class, line) without quoting request data."""
    element = exc.element if isinstance(exc, _ops.TemplateExecutionError) else None
    cause: BaseException | None = exc.__cause__ if element is not None else exc
    line = lines.get(id(element)) if element is not None else None
    if isinstance(cause, Abort):
        return cause.problem, cause.kind, line
    if isinstance(cause, RecursionError):
        return "the template recurses or nests too deeply", TemplateLimitError, line
    where = ""
    if element is not None:
        snippet = element.my_text().strip().splitlines()[0][:60] if element.my_text().strip() else ""
        where = f" in `{snippet}`" if snippet else ""
    return f"{type(cause).__name__} while rendering{where}", TemplateError, line
