"""The WAF: AWS WAF's rule model over each request. Checkpoint: method request (headers, then
body). Policy: ``kind: WebAcl`` (``addons/waf/models.py``); managed groups in ``addons/waf/managed/``.

- Rules run in priority order; the first ``allow`` or ``block`` wins, ``count`` adds labels and
  goes on, else the default action. Rules over the request line and headers decide as soon as the
  headers are in; evaluation pauses before the first rule that needs the body.
- A block is API Gateway's WAF_FILTERED (403 ``{"message":"Forbidden"}``) unless the rule gives its
  own status, headers and body (a WAF custom response wins over gateway responses, as in AWS).
- The trace detail (``ex.details["waf"]``) lists every matched rule with field, transformations,
  an escaped excerpt and labels, and the terminating rule.
- ``mode: report`` on the document is applied by the checkpoint runner; on a rule, its blocks are
  recorded as would-be blocks (a report-only Flag) and evaluation goes on.
- ``rate_based`` counters live in memory, or with ``store: redis://...`` in the throttle's Redis,
  shared by replicas. Only then are the checkpoint methods asynchronous (they await the count);
  while Redis is away ``on_store_error`` decides, the trace says so, and the request is flagged
  ``store_unavailable`` (``sidegate_store_degraded{plugin="waf"}`` is 1 meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from addons.decision import Exchange, Flag, Reject
from addons.waf import metrics
from addons.waf.engine import Match, State, WebAcl, excerpt, safe_location
from addons.waf.fields import RequestView
from addons.waf.models import Statement, WebAclPolicy
from addons.waf.rate import RateStore, SharedRate, redis_rate_store

__all__ = ["Waf", "WebAclPolicy"]

STATE_VAR = "waf_state"
BODY_VAR = "waf_custom_body"


class Waf:
    name = "waf"

    def __init__(
        self,
        policy: WebAclPolicy,
        source: str,
        *,
        enforced: bool,
        rate_store: RateStore | None = None,
        positions: Mapping[tuple[str | int, ...], tuple[int, int]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.source = source
        self.enforced = enforced
        path = source.rsplit(":", 1)[0]

        def rule_source(i: int) -> str:
            pos = (positions or {}).get(("rules", i))
            return f"{path}:{pos[0]}" if pos else source

        self._shared = _shared_rate(policy)
        self.acl = WebAcl(
            policy, enforced=enforced, rule_source=rule_source, rate_store=rate_store, clock=clock, shared=self._shared
        )
        if self._shared is not None:
            # Rate rules count in Redis: both phases await it. Without them the checkpoint methods
            # stay synchronous, and the runner never awaits the WAF.
            self.method_request = self._method_request_shared  # type: ignore[method-assign,assignment]
            self.method_request_body = self._method_request_body_shared  # type: ignore[method-assign,assignment]

    @property
    def degraded(self) -> bool | None:
        """True while the shared rate store is away (``sidegate_store_degraded``); None without one."""
        return self._shared.store.degraded if self._shared is not None else None

    # -- checkpoints ------------------------------------------------------------------------------

    def method_request(self, ex: Exchange) -> Reject | Flag | None:
        return self._advance(ex, self._start(ex), body=False)

    def method_request_body(self, ex: Exchange) -> Reject | Flag | None:
        state: State | None = ex.vars.get(STATE_VAR)
        if state is None:  # the headers phase did not run (a replayed flow)
            self.method_request(ex)
            state = ex.vars[STATE_VAR]
        if state.done:
            return None
        state.ctx.view.body = ex.request.raw_content or b""
        return self._advance(ex, state, body=True)

    async def _method_request_shared(self, ex: Exchange) -> Reject | Flag | None:
        return await self._aadvance(ex, self._start(ex), body=False)

    async def _method_request_body_shared(self, ex: Exchange) -> Reject | Flag | None:
        state: State | None = ex.vars.get(STATE_VAR)
        if state is None:  # the headers phase did not run (a replayed flow)
            await self._method_request_shared(ex)
            state = ex.vars[STATE_VAR]
        if state.done:
            return None
        state.ctx.view.body = ex.request.raw_content or b""
        return await self._aadvance(ex, state, body=True)

    def method_response(self, ex: Exchange) -> None:
        """A WAF custom response body replaces the gateway response's (AWS WAF's precedence)."""
        custom = ex.vars.get(BODY_VAR)
        if custom is not None and ex.rejected_by == self.name and ex.response is not None:
            content_type, body = custom
            ex.response.content = body
            ex.response.headers["content-type"] = content_type

    # -- decisions --------------------------------------------------------------------------------

    def _start(self, ex: Exchange) -> State:
        peer = ex.flow.client_conn.peername[0] if ex.flow.client_conn.peername else ""
        view = RequestView.from_request(ex.request, body_limit=self.acl.body_limit, peer=peer, with_body=False)
        state = self.acl.start(view)
        ex.vars[STATE_VAR] = state
        return state

    def _advance(self, ex: Exchange, state: State, *, body: bool) -> Reject | Flag | None:
        route = ex.route
        overrides = self.acl.overrides(route.key if route is not None else None)
        matched, counted = len(state.matches), len(state.rates) if state.rates else 0
        self.acl.run(state, overrides, body=body)
        return self._conclude(ex, state, matched, counted, body=body)

    async def _aadvance(self, ex: Exchange, state: State, *, body: bool) -> Reject | Flag | None:
        route = ex.route
        overrides = self.acl.overrides(route.key if route is not None else None)
        matched, counted = len(state.matches), len(state.rates) if state.rates else 0
        await self.acl.arun(state, overrides, body=body)
        return self._conclude(ex, state, matched, counted, body=body)

    def _conclude(self, ex: Exchange, state: State, matched: int, counted: int, *, body: bool) -> Reject | Flag | None:
        """Trace, count and decide what this phase found (``matched``/``counted``: found before it)."""
        new = state.matches[matched:]
        rates = state.rates[counted:] if state.rates else None
        for m in new:
            metrics.record(m.rule.id, m.action if m.enforced else f"{m.action}_report")
        unavailable = _unavailable(rates) if rates else None
        if not state.done:
            if new or rates:
                ex.details[self.name] = self._detail(state, new, rates, "headers")
            return Flag("store_unavailable", rule=unavailable) if unavailable else None
        ex.details[self.name] = self._detail(state, new, rates, "body" if body else "headers")
        term = state.terminating
        if term is not None and term.action == "block":
            return self._block(ex, term.rule.block, term.rule.id, term.rule.source, "waf_blocked")
        if term is None and state.default == "block":
            return self._block(ex, self.acl.default_action.block, "default_action", self.source, "waf_default_block")
        self._insert_headers(ex, state)
        would = next((m for m in state.matches if m.action == "block" and not m.enforced), None)
        if would is not None:
            return Flag("waf_blocked", rule=would.rule.id, report_only=True)
        if unavailable is not None:
            return Flag("store_unavailable", rule=unavailable)
        return None

    def _block(self, ex: Exchange, block: Any, rule: str, source: str, reason: str) -> Reject:
        status = None
        headers: tuple[tuple[str, str], ...] = ()
        if block is not None:
            status = block.status if block.status != 403 else None
            headers = tuple(block.headers.items())
            if block.body is not None:
                ex.vars[BODY_VAR] = self.acl.bodies[block.body]
        return Reject("WAF_FILTERED", status=status, reason=reason, rule=rule, source=source, headers=headers)

    @staticmethod
    def _insert_headers(ex: Exchange, state: State) -> None:
        for m in state.matches:
            if m.action in ("allow", "count") and m.enforced:
                for name, value in m.rule.insert_headers:
                    ex.request.headers[name] = value

    def _detail(self, state: State, new: list[Match], rates: list[dict[str, Any]] | None, phase: str) -> dict[str, Any]:
        term = state.terminating
        detail: dict[str, Any] = {
            "acl": self.acl.name,
            "phase": phase,
            "matches": [_match_entry(m) for m in new],
            "labels": list(state.ctx.labels),
            "rules_evaluated": state.evaluated,
        }
        if rates:
            detail["rate"] = rates  # per counted rate rule: the store that decided, count, limit
        if state.done:
            if term is not None:
                detail["terminating"] = {"rule": term.rule.id, "action": term.action}
            else:
                detail["terminating"] = {"rule": "default_action", "action": state.default}
        return detail


def _unavailable(rates: list[dict[str, Any]]) -> str | None:
    """The first rate rule Redis could not count and that did not match for it (allow, local)."""
    for entry in rates:
        if entry.get("store_error") and entry["fallback"] != "deny":
            return str(entry["rule"])
    return None


def _shared_rate(policy: WebAclPolicy) -> SharedRate | None:
    """Redis-backed rate counters, if the ACL has rate rules and a Redis store."""
    if policy.store == "memory" or not any(_has_rate(r.statement) for r in policy.rules):
        return None
    # imported here: addons.throttle imports the policy models, which import this package's
    from addons.throttle import redis_store

    password = policy.password.reveal() if policy.password else None
    redis = redis_store(policy.store, password, policy.store_timeout)  # the throttle's pool for that URL
    return SharedRate(redis_rate_store(redis), policy.on_store_error, policy.replicas)


def _has_rate(statement: Statement | None) -> bool:
    return statement is not None and statement.rate_based is not None  # only ever at the top of a rule


def _match_entry(m: Match) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "rule": m.rule.id,
        "action": m.action,
        "enforced": m.enforced,
        "field": safe_location(m.hit.location),
        "transformations": list(m.hit.transforms),
        "excerpt": excerpt(m.hit),
        "labels": list(m.labels),
    }
    if m.rule.group is not None:
        entry["group"] = m.rule.group
    return entry
