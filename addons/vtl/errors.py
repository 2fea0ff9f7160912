"""Errors, limits and per-render bookkeeping of the mapping-template engine.

Messages are built only from fixed phrases, numbers and template source text (configuration),
never from request data: a template failure ends up in traces and logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass

MAX_TEMPLATE_BYTES = 300 * 1024  # API Gateway quota: "300 KB" per mapping template
MAX_FOREACH_ITERATIONS = 1000  # API Gateway quota: #foreach iterations
MAX_RENDER_SECONDS = 0.5  # ours: a healthy render takes microseconds
MAX_OUTPUT_CHARS = 10 * 1024 * 1024  # API Gateway's payload limit is 10 MB; no value may outgrow it
MAX_COLLECTION_ITEMS = 100_000  # ours: lists and maps a template builds ([1..n], add, put)


@dataclass(frozen=True, slots=True)
class Limits:
    max_template_bytes: int = MAX_TEMPLATE_BYTES
    max_foreach_iterations: int = MAX_FOREACH_ITERATIONS
    max_render_seconds: float = MAX_RENDER_SECONDS
    max_output_chars: int = MAX_OUTPUT_CHARS
    max_collection_items: int = MAX_COLLECTION_ITEMS


DEFAULT_LIMITS = Limits()


class TemplateError(Exception):
    """A template that cannot be compiled or failed while rendering.

    ``reason`` is a stable code for traces: ``template_invalid`` (compile time), ``template_failed``,
    ``template_limit`` or ``invalid_payload`` (render time). ``line`` is 1-based within the template.
    """

    reason = "template_failed"

    def __init__(self, problem: str, *, source: str, line: int | None = None, reason: str | None = None) -> None:
        self.problem = problem
        self.source = source
        self.line = line
        if reason is not None:
            self.reason = reason
        where = f"{source}: template line {line}" if line is not None else source
        super().__init__(f"{where}: {problem}")


class TemplateLimitError(TemplateError):
    """A render exceeded an API Gateway quota or one of our own bounds (iterations, time, size)."""

    reason = "template_limit"


class InvalidPayloadError(TemplateError):
    """The payload looks like JSON but does not parse. API Gateway answers 400 here, not 500."""

    reason = "invalid_payload"


class Abort(Exception):
    """Raised by our own code inside a render. ``problem`` is safe to show (no request data)."""

    def __init__(self, problem: str, kind: type[TemplateError] = TemplateError) -> None:
        super().__init__(problem)
        self.problem = problem
        self.kind = kind


class RenderState:
    """Budgets of one render, reached through a context variable so compiled nodes stay shareable."""

    __slots__ = ("clock", "deadline", "iterations", "limits")

    def __init__(self, limits: Limits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.deadline = clock() + limits.max_render_seconds
        self.iterations = 0

    def check_time(self) -> None:
        if self.clock() > self.deadline:
            raise Abort(f"render took longer than {self.limits.max_render_seconds:g} s", TemplateLimitError)

    def count_iteration(self) -> None:
        self.iterations += 1
        if self.iterations > self.limits.max_foreach_iterations:
            raise Abort(
                f"more than {self.limits.max_foreach_iterations} #foreach iterations in one render",
                TemplateLimitError,
            )
        self.check_time()

    def check_chars(self, n: int) -> None:
        if n > self.limits.max_output_chars:
            raise Abort(
                f"a value or the output grew past {self.limits.max_output_chars} characters", TemplateLimitError
            )

    def check_items(self, n: int) -> None:
        if n > self.limits.max_collection_items:
            raise Abort(f"a list or map grew past {self.limits.max_collection_items} items", TemplateLimitError)


_STATE: ContextVar[RenderState | None] = ContextVar("sidegate_vtl_render_state", default=None)


def current() -> RenderState:
    """The running render's budgets (fresh defaults outside a render, e.g. when helpers are tested alone)."""
    state = _STATE.get()
    return state if state is not None else RenderState(DEFAULT_LIMITS, time.monotonic)


def enter(state: RenderState) -> Token[RenderState | None]:
    return _STATE.set(state)


def leave(token: Token[RenderState | None]) -> None:
    _STATE.reset(token)
