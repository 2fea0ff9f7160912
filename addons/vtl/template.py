"""Compiled templates, what a render takes in, and what it hands back."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from addons.vtl import _engine
from addons.vtl.errors import DEFAULT_LIMITS, Abort, Limits, RenderState, TemplateError, enter, leave
from addons.vtl.values import CowMap, to_text
from addons.vtl.variables import UTIL, InputVariable, OverrideMap, Overrides, context_variable

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Everything a template may see. Parameter maps are searched path, query string, header by
    ``$input.params(x)``; header names are matched exactly as given (API Gateway is case-sensitive)."""

    body: bytes | str = b""
    path_params: Mapping[str, str] = _EMPTY
    query_params: Mapping[str, str] = _EMPTY
    header_params: Mapping[str, str] = _EMPTY
    context: Mapping[str, Any] = _EMPTY  # $context: requestId, identity{...}, authorizer{...}, ...
    stage_variables: Mapping[str, str] = _EMPTY


@dataclass(frozen=True, slots=True)
class RequestOverride:
    header: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    querystring: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    path: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResponseOverride:
    status: int | None = None  # only an integer 100-599 (or its digits) counts, as in LocalStack
    header: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RenderResult:
    text: str
    request_override: RequestOverride = field(default_factory=RequestOverride)
    response_override: ResponseOverride = field(default_factory=ResponseOverride)


def _values(value: Any) -> tuple[str, ...]:
    """A header or query-string override: a list sets several values (API Gateway joins them with ",")."""
    if isinstance(value, list):
        return tuple(to_text(v) for v in value)
    return (to_text(value),)


def _multi(overrides: OverrideMap) -> dict[str, tuple[str, ...]]:
    return {name: _values(value) for name, value in overrides.values.items()}


def _status(overrides: OverrideMap) -> int | None:
    value = overrides.values.get("status")
    if type(value) is str and value.strip().isdigit():
        value = int(value.strip())
    if type(value) is int and 100 <= value <= 599:
        return value
    return None


class Template:
    """A compiled mapping template: compile once at policy load, render per request."""

    __slots__ = ("_limits", "_lines", "_root", "size", "source")

    def __init__(self, root: Any, lines: dict[int, int], *, source: str, size: int, limits: Limits) -> None:
        self._root = root
        self._lines = lines
        self._limits = limits
        self.source = source
        self.size = size

    def render(self, context: RenderContext, *, clock: Callable[[], float] | None = None) -> RenderResult:
        """Render against one request or response. Raises :class:`TemplateError` (or a subclass); its
        message names the template line and never quotes request data."""
        state = RenderState(self._limits, clock or time.monotonic)
        body = context.body.decode("utf-8", "replace") if isinstance(context.body, bytes) else context.body
        overrides = Overrides(context.context)
        variables: dict[str, Any] = {
            "input": InputVariable(body, context.path_params, context.query_params, context.header_params),
            "util": UTIL,
            "context": context_variable(context.context, overrides),
            "stageVariables": CowMap(context.stage_variables),
        }
        out = _engine.Output(self._limits.max_output_chars)
        token = enter(state)
        try:
            _engine.evaluate(self._root, variables, out)
            text = out.text()
        except Exception as exc:
            problem, kind, line = _engine.explain(exc, self._lines)
            raise kind(problem, source=self.source, line=line) from None
        finally:
            leave(token)
        return RenderResult(
            text,
            RequestOverride(
                header=_multi(overrides.request_header),
                querystring=_multi(overrides.request_query),
                path={name: to_text(value) for name, value in overrides.request_path.values.items()},
            ),
            ResponseOverride(status=_status(overrides.response), header=_multi(overrides.response_header)),
        )


def compile_template(text: str, *, source: str, limits: Limits = DEFAULT_LIMITS) -> Template:
    """Compile a mapping template; ``source`` (e.g. ``policies/api.yaml:42``) prefixes every error.

    Raises :class:`TemplateError` with reason ``template_invalid`` for templates over API Gateway's
    300 KB limit, syntax errors and directives API Gateway does not support.
    """
    size = len(text.encode("utf-8"))
    if size > limits.max_template_bytes:
        raise TemplateError(
            f"template is {size} bytes; API Gateway's limit is {limits.max_template_bytes} bytes",
            source=source,
            reason="template_invalid",
        )
    try:
        root, lines = _engine.compile_tree(text)
    except _engine.CompileProblem as exc:
        raise TemplateError(exc.problem, source=source, line=exc.line, reason="template_invalid") from None
    except Abort as exc:
        raise TemplateError(exc.problem, source=source, reason="template_invalid") from None
    return Template(root, lines, source=source, size=size, limits=limits)
