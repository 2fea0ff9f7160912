"""The four checkpoints, as mitmproxy addons nested under the one top-level ``Sidegate`` addon.

| checkpoint           | mitmproxy hook(s)            | plugin method(s)                          |
| -------------------- | ---------------------------- | ----------------------------------------- |
| method request       | requestheaders, request      | method_request, method_request_body       |
| integration request  | request                      | integration_request, then the backend call|
| integration response | response                     | integration_response (backend answers)    |
| method response      | response, error              | method_response (every answer)            |

The runner owns what every plugin needs once: skip decided flows on the request side, turn an
unexpected exception into a 500 gateway response (fail closed), record the trace entry with its
duration, and apply enforced rejections (report-only ones are recorded and counted, and the
request passes).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from addons.decision import Answer, Exchange, Flag, Reject
from addons.plugins import PluginSlot

if TYPE_CHECKING:
    from addons.gateway import Sidegate

log = logging.getLogger("sidegate")

METHOD_REQUEST = "method_request"
INTEGRATION_REQUEST = "integration_request"
INTEGRATION_RESPONSE = "integration_response"
METHOD_RESPONSE = "method_response"
CHECKPOINTS = (METHOD_REQUEST, INTEGRATION_REQUEST, INTEGRATION_RESPONSE, METHOD_RESPONSE)


def trace_entry(
    checkpoint: str,
    plugin: str,
    outcome: str,
    us: int,
    *,
    enforced: bool = True,
    reject: Reject | None = None,
    source: str | None = None,
    status: int | None = None,
    reason: str | None = None,
    rule: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One plain-data trace entry (mitmproxy serialises metadata when flows are saved)."""
    entry: dict[str, Any] = {
        "checkpoint": checkpoint,
        "plugin": plugin,
        "outcome": outcome,
        "reason": reject.reason if reject else reason,
        "rule": reject.rule if reject else rule,
        "response_type": reject.response_type if reject else None,
        "status": status,
        "source": (reject.source if reject and reject.source else source),
        "enforced": enforced,
        "us": us,
    }
    if detail:
        entry["detail"] = detail  # plugin-specific plain data (e.g. throttle tiers and tokens)
    return entry


async def run_plugins(
    gate: Sidegate, ex: Exchange, checkpoint: str, slots: tuple[PluginSlot, ...], *, guard: bool
) -> None:
    """Run one checkpoint's plugins in order (see the module docstring for the runner's duties)."""
    for slot in slots:
        if guard and ex.decided:
            return
        if slot.only_for is not None and ex.request.method not in slot.only_for:
            continue
        start = time.perf_counter_ns()
        try:
            result = slot.method(ex)
            if slot.is_async:
                result = await result  # type: ignore[misc]
        except Exception:
            us = (time.perf_counter_ns() - start) // 1000
            # Never include request data in the message; the traceback names the plugin's code.
            log.exception("sidegate: plugin %s failed at %s (request %s)", slot.name, checkpoint, ex.request_id)
            fail_open = slot.fail_open or not slot.enforced
            failure = Reject("API_CONFIGURATION_ERROR", reason="internal_error", source=slot.source)
            ex.trace.append(trace_entry(checkpoint, slot.name, "error", us, enforced=not fail_open, reject=failure))
            gate.metrics.rejection(slot.name, "internal_error", not fail_open)
            if fail_open:
                continue
            apply_rejection(gate, ex, slot.name, failure)
            return
        us = (time.perf_counter_ns() - start) // 1000
        if isinstance(result, Answer):
            ex.trace.append(
                trace_entry(
                    checkpoint, slot.name, "answer", us, source=slot.source, status=result.status, reason=result.reason
                )
            )
            apply_answer(ex, slot.name, result)
            return
        if isinstance(result, Flag):
            enforced = slot.enforced and not result.report_only
            ex.trace.append(
                trace_entry(
                    checkpoint,
                    slot.name,
                    "flag",
                    us,
                    enforced=enforced,
                    source=slot.source,
                    reason=result.reason,
                    rule=result.rule,
                    detail=ex.details.pop(slot.name, None),
                )
            )
            gate.metrics.rejection(slot.name, result.reason, enforced)
            (ex.flags if enforced else ex.report_only).append((slot.name, result))
            continue
        if result is None:
            ex.trace.append(
                trace_entry(
                    checkpoint,
                    slot.name,
                    "continue",
                    us,
                    enforced=slot.enforced,
                    source=slot.source,
                    detail=ex.details.pop(slot.name, None),
                )
            )
            continue
        assert isinstance(result, Reject), f"plugin {slot.name} returned {type(result).__name__}"
        ex.trace.append(
            trace_entry(
                checkpoint,
                slot.name,
                "reject",
                us,
                enforced=slot.enforced,
                reject=result,
                source=slot.source,
                detail=ex.details.pop(slot.name, None),
            )
        )
        gate.metrics.rejection(slot.name, result.reason, slot.enforced)
        if not slot.enforced:
            ex.report_only.append((slot.name, result))
            if result.report_answer is not None:  # passing means the gateway answers (a preflight)
                apply_answer(ex, slot.name, result.report_answer)
                return
            continue
        apply_rejection(gate, ex, slot.name, result)
        return


def apply_rejection(gate: Sidegate, ex: Exchange, plugin: str, reject: Reject) -> None:
    """The one place a rejection becomes ``flow.response`` (method response decorates it later)."""
    answer = ex.policy.responder.render(reject, ex)
    ex.flow.response = http.Response.make(
        answer.status, answer.body, http.Headers([(k.encode(), v.encode()) for k, v in answer.headers])
    )
    ex.rejection = reject
    ex.rejected_by = plugin
    ex.gateway_answer = True


LAST_RESORT_BODY = b'{"message":"Internal server error"}'


def fail_closed[C: "_Checkpoint"](
    hook: Callable[[C, http.HTTPFlow], Awaitable[None]],
) -> Callable[[C, http.HTTPFlow], Awaitable[None]]:
    """mitmproxy only logs an exception escaping a hook and lets the flow go on to the backend.

    Around every checkpoint hook, an unexpected exception instead answers 500 with a static body
    (the responder itself may be what failed) and records the request.
    """

    @functools.wraps(hook)
    async def guarded(self: C, flow: http.HTTPFlow) -> None:
        try:
            await hook(self, flow)
        except Exception:
            log.exception("sidegate: %s failed; answering 500", self.name)
            flow.response = http.Response.make(
                500,
                LAST_RESORT_BODY,
                {"content-type": "application/json", "x-amzn-ErrorType": "InternalServerErrorException"},
            )
            ex = self.gate.exchange(flow, create=False)
            if ex is not None:
                ex.gateway_answer = True
                ex.rejection = Reject("API_CONFIGURATION_ERROR", reason="internal_error")
                ex.rejected_by = self.name
                if not ex.finished and self.name == METHOD_RESPONSE:
                    flow.response.headers[self.gate.request_id_header] = ex.request_id
                    self.gate.finish(ex)

    return guarded


def apply_answer(ex: Exchange, plugin: str, answer: Answer) -> None:
    ex.flow.response = http.Response.make(
        answer.status, answer.body, http.Headers([(k.encode(), v.encode()) for k, v in answer.headers])
    )
    ex.answered_by = plugin
    ex.gateway_answer = True


class _Checkpoint:
    name: str

    def __init__(self, gate: Sidegate) -> None:
        self.gate = gate


class MethodRequest(_Checkpoint):
    """Client-facing checks, run as soon as the request headers are in."""

    name = METHOD_REQUEST

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        ex = self.gate.exchange(flow)
        if ex is not None:
            await self.run_headers(ex)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        ex = self.gate.exchange(flow)
        if ex is None:
            return
        if not ex.vars.get("_headers_checked"):
            # Flows that skipped requestheaders (a replay from mitmweb) get the header checks here.
            await self.run_headers(ex)
        start = time.perf_counter_ns()
        await run_plugins(self.gate, ex, self.name, ex.policy.plugins["method_request_body"], guard=True)
        ex.checkpoint_us[self.name] = ex.checkpoint_us.get(self.name, 0) + (time.perf_counter_ns() - start) // 1000

    async def run_headers(self, ex: Exchange) -> None:
        ex.vars["_headers_checked"] = True
        start = time.perf_counter_ns()
        await run_plugins(self.gate, ex, self.name, ex.policy.plugins["method_request"], guard=True)
        ex.checkpoint_us[self.name] = ex.checkpoint_us.get(self.name, 0) + (time.perf_counter_ns() - start) // 1000


class IntegrationRequest(_Checkpoint):
    """Shape the backend request, then call the backend (API Gateway's integration)."""

    name = INTEGRATION_REQUEST

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        ex = self.gate.exchange(flow)
        if ex is None:
            if flow.response is None:  # no policy set loaded: refuse rather than forward unchecked
                flow.response = http.Response.make(
                    503, b'{"message":"Service Unavailable"}', {"content-type": "application/json"}
                )
            return
        if ex.decided:
            return
        start = time.perf_counter_ns()
        await run_plugins(self.gate, ex, self.name, ex.policy.plugins["integration_request"], guard=True)
        ex.checkpoint_us[self.name] = (time.perf_counter_ns() - start) // 1000
        if not ex.decided:
            await self.gate.integrations.call(ex)
        if flow.response is None:
            # sidegate always answers itself; mitmproxy must never forward on its own.
            raise RuntimeError("integration produced no response")


class IntegrationResponse(_Checkpoint):
    """Map the backend's answer. Gateway answers (rejections, upstream failures) skip this."""

    name = INTEGRATION_RESPONSE

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        ex = self.gate.exchange(flow, create=False)
        if ex is None or ex.gateway_answer or ex.finished:
            return
        start = time.perf_counter_ns()
        await run_plugins(self.gate, ex, self.name, ex.policy.plugins["integration_response"], guard=False)
        ex.checkpoint_us[self.name] = (time.perf_counter_ns() - start) // 1000


class MethodResponse(_Checkpoint):
    """Standardise every answer, gateway responses included, then record the request."""

    name = METHOD_RESPONSE

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        ex = self.gate.exchange(flow, create=False)
        if ex is None or ex.finished:
            return
        await self.decorate(ex)
        self.gate.finish(ex)

    async def decorate(self, ex: Exchange) -> None:
        start = time.perf_counter_ns()
        await run_plugins(self.gate, ex, self.name, ex.policy.plugins["method_response"], guard=False)
        if ex.flow.response is not None:
            ex.flow.response.headers[self.gate.request_id_header] = ex.request_id
        ex.checkpoint_us[self.name] = (time.perf_counter_ns() - start) // 1000

    @fail_closed
    async def error(self, flow: http.HTTPFlow) -> None:
        """mitmproxy's own failures (body too large, invalid request) leave as gateway responses."""
        ex = self.gate.exchange(flow, create=False)
        if ex is None or ex.finished or flow.error is None:
            return
        reject = self.gate.errorpages.rejection_for(flow.error.msg)
        if reject is not None:
            ex.trace.append(trace_entry(self.name, "proxy", "reject", 0, reject=reject, reason=reject.reason))
            apply_rejection(self.gate, ex, "proxy", reject)
            await self.decorate(ex)
            assert flow.response is not None
            self.gate.errorpages.stash(flow, flow.response)
        self.gate.finish(ex, error=flow.error.msg)
