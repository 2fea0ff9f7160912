"""The compiled web ACL: rules in priority order, managed groups expanded, exclusions per route.

Evaluation follows AWS WAF: rules run in ascending priority; ``count`` matches add labels and go
on; the first ``allow`` or ``block`` ends it; otherwise the default action applies. Rules that only
look at the request line and headers run as soon as the headers are in; evaluation pauses at the
first rule that needs the body and resumes when the body is in, so the order is never changed.

Rate rules count the request once their scope-down matched. In memory that happens in line; with a
shared store (Redis) ``run`` pauses at the rule (``State.pending``) and ``arun`` awaits the count,
then goes on. An ACL without Redis-backed rate rules never awaits anything.

Speed (DESIGN.md section 6): consecutive rules whose statements need a bank pattern to match (see
``statements``) form a block. For a block, the engine runs its banks (one RE2 search per bank in
the common case), and evaluates only the rules whose patterns found something: a thousand regex
rules over the same field cost about what ten do.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from addons.waf import managed
from addons.waf.fields import FieldSpec, Pipes, RequestView, compile_field
from addons.waf.ipsets import IpSet
from addons.waf.models import Action, BlockResponse, FieldToMatch, Statement, WafRule, WebAclPolicy
from addons.waf.rate import RateHit, RateLeaf, RateStore, SharedRate, memory_rate_store
from addons.waf.statements import (
    And,
    BankLeaf,
    BankRegistry,
    Ctx,
    DetectorLeaf,
    Hit,
    IpLeaf,
    LabelLeaf,
    Node,
    Not,
    Or,
    SizeLeaf,
    ValueMemo,
    byte_pattern,
    regex_text,
    walk,
)

EXCERPT_CHARS = 64
REDACTED_LOCATIONS = ("header:authorization", "header:proxy-authorization", "header:x-api-key")


@dataclass(slots=True)
class CompiledRule:
    id: str
    order: tuple[int, ...]  # (priority,) or (group priority, rule priority)
    action: str  # allow | block | count
    block: BlockResponse | None
    insert_headers: tuple[tuple[str, str], ...]
    labels: tuple[str, ...]
    node: Node
    enforced: bool
    source: str
    group: str | None


@dataclass(frozen=True, slots=True)
class Override:
    disabled: bool = False
    count: bool = False
    excluded_fields: tuple[str, ...] = ()
    count_fields: tuple[str, ...] = ()


@dataclass(slots=True)
class Block:
    """Consecutive rules that can only match if one of their bank patterns does."""

    rules: list[CompiledRule]
    banks: list[Any]
    atom_rules: dict[tuple[int, int], list[int]]
    needs_body: bool


Step = Block | CompiledRule


@dataclass(slots=True)
class Match:
    rule: CompiledRule
    action: str
    hit: Hit
    labels: tuple[str, ...]
    enforced: bool


@dataclass(slots=True)
class State:
    """One request's evaluation, carried from the headers phase to the body phase."""

    ctx: Ctx
    step: int = 0
    matches: list[Match] = field(default_factory=list)
    terminating: Match | None = None
    default: str | None = None  # the default action applied, if evaluation reached the end
    done: bool = False
    evaluated: int = 0
    pending: tuple[CompiledRule, str, RateHit] | None = None  # a rate rule awaiting its shared count
    rates: list[dict[str, Any]] | None = None  # each counted rate rule: store, count, limit, fallback

    def rate_trace(self) -> list[dict[str, Any]]:
        if self.rates is None:
            self.rates = []
        return self.rates


class Compiler:
    def __init__(
        self,
        policy: WebAclPolicy,
        rate_store: RateStore | None,
        clock: Callable[[], float],
        shared: SharedRate | None = None,
    ) -> None:
        self.policy = policy
        self.pipes = Pipes()
        self.banks = BankRegistry(self.pipes)
        self.rate_store = rate_store
        self.clock = clock
        self.shared = shared
        self._ipsets = {name: IpSet(nets) for name, nets in policy.ip_sets.items()}
        self._fields: dict[int, tuple[FieldSpec, ...]] = {}
        self._memos: dict[tuple[str, bool, tuple[str, ...]], ValueMemo] = {}

    def _memo(self, key: tuple[str, bool, tuple[str, ...]]) -> ValueMemo:
        """One memo per (detector, sensitivity, chain): the verdict depends on nothing else."""
        got = self._memos.get(key)
        if got is None:
            got = self._memos[key] = ValueMemo()
        return got

    def fields(self, fields: list[FieldToMatch]) -> tuple[FieldSpec, ...]:
        return tuple(compile_field(f) for f in fields)

    def node(self, st: Statement, rule_id: str) -> Node:
        if st.byte_match is not None:
            s = st.byte_match
            return self.banks.leaf(self.fields(s.field), tuple(s.transformations), [byte_pattern(s.match, s.value)])
        if st.regex is not None:
            r = st.regex
            return self.banks.leaf(self.fields(r.field), tuple(r.transformations), [regex_text(r.pattern)])
        if st.regex_set is not None:
            rs = st.regex_set
            patterns = [regex_text(p) for p in self.policy.regex_pattern_sets[rs.set]]
            return self.banks.leaf(self.fields(rs.field), tuple(rs.transformations), patterns)
        if st.sqli is not None:
            q = st.sqli
            pipe = self.pipes.get(self.fields(q.field), tuple(q.transformations))
            high = q.sensitivity == "high"
            return DetectorLeaf("sqli", pipe, high, self._memo(("sqli", high, pipe.chain)))
        if st.xss is not None:
            pipe = self.pipes.get(self.fields(st.xss.field), tuple(st.xss.transformations))
            return DetectorLeaf("xss", pipe, memo=self._memo(("xss", False, pipe.chain)))
        if st.size_constraint is not None:
            sc = st.size_constraint
            pipe = self.pipes.get(self.fields(sc.field), tuple(sc.transformations))
            return SizeLeaf(pipe, sc.comparison, sc.size)
        if st.ip_set is not None:
            ip = st.ip_set
            ipset = self._ipsets[ip.set] if ip.set is not None else IpSet(ip.addresses or [])
            return IpLeaf(ipset, ip.forwarded_ip)
        if st.label_match is not None:
            return LabelLeaf(st.label_match.scope, st.label_match.key)
        if st.rate_based is not None:
            rb = st.rate_based
            scope = self.node(rb.scope_down, rule_id) if rb.scope_down is not None else None
            store = self.rate_store or memory_rate_store(rule_id, fallback=self.shared is not None)
            return RateLeaf(rule_id, rb, scope, store, self.clock, self.shared)
        if st.and_ is not None:
            return And([self.node(c, rule_id) for c in st.and_])
        if st.or_ is not None:
            return Or([self.node(c, rule_id) for c in st.or_])
        assert st.not_ is not None
        return Not(self.node(st.not_, rule_id))


def _headers(action: Action) -> tuple[tuple[str, str], ...]:
    spec = action.allow or action.count
    if spec is None:
        return ()
    return tuple((f"x-amzn-waf-{k}", v) for k, v in spec.insert_headers.items())


class WebAcl:
    """A compiled ``kind: WebAcl`` document."""

    def __init__(
        self,
        policy: WebAclPolicy,
        *,
        enforced: bool,
        rule_source: Callable[[int], str],
        rate_store: RateStore | None = None,
        clock: Callable[[], float] | None = None,
        shared: SharedRate | None = None,
    ) -> None:
        """``rate_store``: one store for every rate rule (tests); by default each rule keeps its own
        for the life of the process. ``shared``: rate rules count in Redis (use ``arun``)."""
        self.policy = policy
        self.name = policy.name
        self.body_limit = policy.body_inspection_limit
        self.header_limit = policy.header_inspection_limit
        self.cookie_limit = policy.cookie_inspection_limit
        self.default_action = policy.default_action
        self.bodies = {k: (v.content_type, v.content.encode()) for k, v in policy.custom_response_bodies.items()}
        self.shared = shared
        compiler = Compiler(policy, rate_store, clock or time.monotonic, shared)
        rules: list[CompiledRule] = []
        for i, rule in enumerate(policy.rules):
            source = rule_source(i)
            # A rule's own ``mode: report`` makes its block a recorded would-be block; the document's
            # mode is applied by the checkpoint runner to the plugin's decision as a whole.
            rule_enforced = (rule.mode or "enforce") == "enforce"
            if rule.managed_group is None:
                rules.append(self._plain(compiler, rule, source, rule_enforced))
            else:
                rules.extend(self._group(compiler, rule, source, rule_enforced))
        rules.sort(key=lambda r: r.order)
        compiler.banks.compile()
        self.rules = rules
        self.rule_ids = [r.id for r in rules]
        self.banks = list(compiler.banks.banks.values())
        self.pipes = compiler.pipes
        self.steps = self._steps(rules)
        self._exclusions = policy.exclusions
        self._overrides: dict[str | None, dict[str, Override]] = {}

    @staticmethod
    def _plain(compiler: Compiler, rule: WafRule, source: str, enforced: bool) -> CompiledRule:
        assert rule.statement is not None and rule.action is not None
        return CompiledRule(
            id=rule.id,
            order=(rule.priority,),
            action=rule.action.name,
            block=rule.action.block,
            insert_headers=_headers(rule.action),
            labels=tuple(rule.labels),
            node=compiler.node(rule.statement, rule.id),
            enforced=enforced,
            source=source,
            group=None,
        )

    @staticmethod
    def _group(compiler: Compiler, ref: WafRule, source: str, enforced: bool) -> Iterator[CompiledRule]:
        assert ref.managed_group is not None
        scope = compiler.node(ref.scope_down, ref.id) if ref.scope_down is not None else None
        for member in managed.group_rules(ref.managed_group):
            if any(fnmatch.fnmatchcase(member.id, pat) for pat in ref.disabled_rules):
                continue
            action = member.action
            for pat, override in ref.rule_action_overrides.items():
                if fnmatch.fnmatchcase(member.id, pat):
                    action = override
            assert action is not None and member.statement is not None
            name = "count" if ref.override_action == "count" else action.name
            node = compiler.node(member.statement, member.id)
            if scope is not None:
                node = And([scope, node])
            yield CompiledRule(
                id=member.id,
                order=(ref.priority, member.priority),
                action=name,
                block=action.block,
                insert_headers=_headers(action),
                labels=tuple(member.labels),
                node=node,
                enforced=enforced,
                source=source,
                group=ref.managed_group,
            )

    @staticmethod
    def _steps(rules: list[CompiledRule]) -> list[Step]:
        steps: list[Step] = []
        current: Block | None = None
        for rule in rules:
            req = rule.node.requirement
            if req is None:
                steps.append(rule)
                current = None
                continue
            if current is None or current.needs_body != rule.node.needs_body:
                current = Block([], [], {}, rule.node.needs_body)
                steps.append(current)
            index = len(current.rules)
            current.rules.append(rule)
            for atom in req:
                current.atom_rules.setdefault(atom, []).append(index)
        for step in steps:
            if isinstance(step, Block):
                uids = {uid for uid, _ in step.atom_rules}
                by_uid = {}
                for rule in step.rules:
                    for bank in _banks_of(rule.node):
                        by_uid[bank.uid] = bank
                step.banks = [by_uid[u] for u in sorted(uids)]
        return steps

    # -- per-route exclusions ---------------------------------------------------------------------

    def overrides(self, route_key: str | None) -> dict[str, Override]:
        got = self._overrides.get(route_key)
        if got is not None:
            return got
        acc: dict[str, dict[str, Any]] = {}
        for exclusion in self._exclusions:
            if exclusion.routes and route_key not in exclusion.routes:
                continue
            for rule in self.rules:
                if not any(_rule_selected(rule, ref) for ref in exclusion.rules):
                    continue
                o = acc.setdefault(rule.id, {"disabled": False, "count": False, "ex": [], "cf": []})
                if exclusion.fields:
                    o["ex" if exclusion.action == "disable" else "cf"].extend(exclusion.fields)
                elif exclusion.action == "disable":
                    o["disabled"] = True
                else:
                    o["count"] = True
        got = {
            rid: Override(o["disabled"], o["count"], tuple(o["ex"]), tuple(x for x in o["cf"] if x not in o["ex"]))
            for rid, o in acc.items()
        }
        if len(self._overrides) < 10_000:  # bounded by the number of routes in practice
            self._overrides[route_key] = got
        return got

    # -- evaluation -------------------------------------------------------------------------------

    def start(self, view: RequestView) -> State:
        # this ACL's header and cookie limits (the body's is given when the view is built)
        view.header_limit, view.cookie_limit = self.header_limit, self.cookie_limit
        return State(Ctx(view, time.monotonic()))

    def run(self, state: State, overrides: dict[str, Override], *, body: bool) -> None:
        """Advance the evaluation as far as the available parts of the request allow."""
        steps = self.steps
        ctx = state.ctx
        while state.step < len(steps) and not state.done:
            step = steps[state.step]
            if isinstance(step, Block):
                if step.needs_body and not body:
                    return
                for rule in self._candidates(step, ctx.view):
                    if self._rule(state, rule, overrides):
                        return
            else:
                if step.node.needs_body and not body:
                    return
                if self._rule(state, step, overrides):
                    return
            state.step += 1
        if not state.done:
            state.done = True
            state.default = self.default_action.name

    @staticmethod
    def _candidates(block: Block, view: RequestView) -> list[CompiledRule]:
        found: set[int] = set()
        atom_rules = block.atom_rules
        for bank in block.banks:
            hits = bank.hits(view)
            for pid in hits:
                rules = atom_rules.get((bank.uid, pid))
                if rules:
                    found.update(rules)
        return [block.rules[i] for i in sorted(found)]

    async def arun(self, state: State, overrides: dict[str, Override], *, body: bool) -> None:
        """``run``, awaiting the shared store wherever a rate rule needs its count."""
        self.run(state, overrides, body=body)
        while state.pending is not None:
            rule, action, pending = state.pending
            state.pending = None
            hit = await pending.settle(state.rate_trace())
            state.step += 1  # a rate rule is a step of its own (it has no pattern requirement)
            if hit is not None and self._matched(state, rule, action, hit):
                return
            self.run(state, overrides, body=body)

    def _rule(self, state: State, rule: CompiledRule, overrides: dict[str, Override]) -> bool:
        """Evaluate one rule; True when it ends the evaluation (or pauses it for a shared count)."""
        ctx = state.ctx
        o = overrides.get(rule.id) if overrides else None
        state.evaluated += 1
        action = rule.action
        if o is None:
            hit = rule.node.match(ctx)
        else:
            if o.disabled:
                return False
            # fields switched to count are left out of the first pass, then inspected alone
            ctx.exclude = o.excluded_fields + o.count_fields
            try:
                hit = rule.node.match(ctx)
                if hit is None and o.count_fields:
                    ctx.exclude, ctx.only = o.excluded_fields, o.count_fields
                    hit = rule.node.match(ctx)
                    if hit is not None:
                        action = "count"
            finally:
                ctx.exclude, ctx.only = (), None
            if o.count:
                action = "count"
        if hit is None:
            return False
        if type(hit) is RateHit:  # a rate rule's scope-down matched: count the request
            if hit.shared:
                state.pending = (rule, action, hit)
                return True
            counted = hit.count(state.rate_trace())
            if counted is None:
                return False
            hit = counted
        return self._matched(state, rule, action, hit)

    @staticmethod
    def _matched(state: State, rule: CompiledRule, action: str, hit: Hit) -> bool:
        """Record a match; True when its action ends the evaluation."""
        ctx = state.ctx
        for label in rule.labels:
            ctx.add_label(label)
        terminating = action in ("allow", "block") and rule.enforced
        match = Match(rule, action, hit, rule.labels, rule.enforced)
        state.matches.append(match)
        if terminating:
            state.terminating = match
            state.done = True
            return True
        return False


def _rule_selected(rule: CompiledRule, ref: str) -> bool:
    if ref.startswith("group:"):
        return rule.group == ref[6:]
    return fnmatch.fnmatchcase(rule.id, ref)


def _banks_of(node: Node) -> Iterator[Any]:
    return (leaf.bank for leaf in walk(node) if isinstance(leaf, BankLeaf))


def excerpt(hit: Hit) -> str:
    """A short, escaped piece of the matched value around the match (never a secret header)."""
    if hit.location.startswith(REDACTED_LOCATIONS):
        return "(redacted)"
    text = hit.text
    start = 0
    if hit.pattern is not None and len(text) > EXCERPT_CHARS:
        try:
            m = hit.pattern.search(text)
        except Exception:
            m = None
        if m is not None:
            start = max(0, m.start() - 16)
    piece = text[start : start + EXCERPT_CHARS]
    escaped = piece.encode("unicode_escape").decode("ascii")
    return ("…" if start else "") + escaped + ("…" if start + EXCERPT_CHARS < len(text) else "")


def safe_location(location: str) -> str:
    """Locations hold client-chosen names (query args, JSON keys): escape and bound them."""
    return location[:96].encode("unicode_escape").decode("ascii")
