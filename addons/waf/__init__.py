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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from addons.decision import Exchange, Flag, Reject
from addons.waf import metrics
from addons.waf.engine import Match, State, WebAcl, excerpt, safe_location
from addons.waf.fields import RequestView
from addons.waf.models import WebAclPolicy
from addons.waf.rate import RateStore

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

        self.acl = WebAcl(policy, enforced=enforced, rule_source=rule_source, rate_store=rate_store, clock=clock)

    # -- checkpoints ------------------------------------------------------------------------------

    def method_request(self, ex: Exchange) -> Reject | Flag | None:
        peer = ex.flow.client_conn.peername[0] if ex.flow.client_conn.peername else ""
        view = RequestView.from_request(ex.request, body_limit=self.acl.body_limit, peer=peer, with_body=False)
        state = self.acl.start(view)
        ex.vars[STATE_VAR] = state
        return self._advance(ex, state, body=False)

    def method_request_body(self, ex: Exchange) -> Reject | Flag | None:
        state: State | None = ex.vars.get(STATE_VAR)
        if state is None:  # the headers phase did not run (a replayed flow)
            self.method_request(ex)
            state = ex.vars[STATE_VAR]
        if state.done:
            return None
        state.ctx.view.body = ex.request.raw_content or b""
        return self._advance(ex, state, body=True)

    def method_response(self, ex: Exchange) -> None:
        """A WAF custom response body replaces the gateway response's (AWS WAF's precedence)."""
        custom = ex.vars.get(BODY_VAR)
        if custom is not None and ex.rejected_by == self.name and ex.response is not None:
            content_type, body = custom
            ex.response.content = body
            ex.response.headers["content-type"] = content_type

    # -- decisions --------------------------------------------------------------------------------

    def _advance(self, ex: Exchange, state: State, *, body: bool) -> Reject | Flag | None:
        route = ex.route
        overrides = self.acl.overrides(route.key if route is not None else None)
        before = len(state.matches)
        self.acl.run(state, overrides, body=body)
        new = state.matches[before:]
        for m in new:
            metrics.record(m.rule.id, m.action if m.enforced else f"{m.action}_report")
        if not state.done:
            if new:
                ex.details[self.name] = self._detail(state, new, "headers")
            return None
        ex.details[self.name] = self._detail(state, new, "body" if body else "headers")
        term = state.terminating
        if term is not None and term.action == "block":
            return self._block(ex, term.rule.block, term.rule.id, term.rule.source, "waf_blocked")
        if term is None and state.default == "block":
            return self._block(ex, self.acl.default_action.block, "default_action", self.source, "waf_default_block")
        self._insert_headers(ex, state)
        would = next((m for m in state.matches if m.action == "block" and not m.enforced), None)
        if would is not None:
            return Flag("waf_blocked", rule=would.rule.id, report_only=True)
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

    def _detail(self, state: State, new: list[Match], phase: str) -> dict[str, Any]:
        term = state.terminating
        detail: dict[str, Any] = {
            "acl": self.acl.name,
            "phase": phase,
            "matches": [_match_entry(m) for m in new],
            "labels": list(state.ctx.labels),
            "rules_evaluated": state.evaluated,
        }
        if state.done:
            if term is not None:
                detail["terminating"] = {"rule": term.rule.id, "action": term.action}
            else:
                detail["terminating"] = {"rule": "default_action", "action": state.default}
        return detail


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
