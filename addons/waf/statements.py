"""Compiled statements: each node answers ``match(ctx) -> Hit | None`` for one request.

Regex-like leaves (``regex``, ``regex_set``, ``byte_match``) do not search on their own: their
patterns are pooled in *banks*, one per (fields, transformations). A bank runs one RE2 search for
all its patterns over all values of its fields (joined by newlines when the transformations allow
it, see ``transforms.LINE_SAFE``), and only when that finds something does it work out which
patterns matched which values. Everything is RE2: linear in the input, whatever the pattern.

Before that, most banks look at a *sweep*: the request's header-phase components (method, path,
its segments, query string and arguments, every header and cookie, names and values) joined once
and transformed once per chain, shared by every bank with that chain. A pattern that matches a
value of a bank's own fields matches the sweep too, so a sweep without a match means no hits, and
a request with nothing suspicious costs one search per bank over text built once per chain instead
of one extraction and join per bank. Beyond the header or cookie inspection limits (values cut or
left out) the banks go straight to their own fields.

Each leaf also states its *requirement*: the bank patterns of which at least one must match for
the statement to be true (None when it can be true without, e.g. under ``not``). The engine uses
it to skip whole runs of rules whose patterns found nothing.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import re2

from addons.waf import detect, transforms
from addons.waf.fields import SWEEP_ALL, SWEEP_FAMILY, FieldSpec, Pipe, Pipes, RequestView
from addons.waf.ipsets import IpSet, addresses_to_inspect
from addons.waf.models import ForwardedIp

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

Atom = tuple[int, int]  # (bank id, pattern index)
MAX_MEM = 256 << 20  # RE2 program/DFA budget for one bank's combined pattern
MEMO_SIZE = 8192  # raw values remembered per memo; it starts over when full
MEMO_MAX_LEN = 512  # longer values are worked out every time
_bank_ids = itertools.count(1)
SWEPT_KINDS = frozenset({"all_headers", "cookies", "all_query_args", "path_segments"})  # many values each


class ValueMemo:
    """What a transformation chain and a check (a bank's patterns, a detector) make of one raw
    value, remembered across requests. Clients send the same header values, cookies and path
    segments request after request; a value seen before costs one lookup instead of the chain and
    the check. The answer depends on nothing but the value, so remembering it changes no verdict.
    Bounded in entries and value length; when full it starts over (a client sending only new values
    gets the cost of no memo, never an unbounded one)."""

    __slots__ = ("_got", "size")

    def __init__(self, size: int = MEMO_SIZE) -> None:
        self._got: dict[str, Any] = {}
        self.size = size

    def get(self, text: str) -> Any:
        return self._got.get(text)

    def put(self, text: str, value: Any) -> None:
        if len(text) > MEMO_MAX_LEN:
            return
        got = self._got
        if len(got) >= self.size:
            got.clear()
        got[text] = value

    def __len__(self) -> int:
        return len(self._got)


def _options(*, never_capture: bool = False) -> Any:
    opts = re2.Options()
    opts.log_errors = False
    opts.max_mem = MAX_MEM
    opts.never_capture = never_capture
    return opts


_UNANCHORED = re2._Anchor.UNANCHORED


def search_bytes(compiled: Any, data: bytes) -> bool:
    """Does ``compiled`` (RE2) match anywhere in ``data``? No submatches, no offset mapping."""
    spans = compiled._regexp.Match(_UNANCHORED, data, 0, len(data))
    return bool(spans[0][0] != -1)


@dataclass(slots=True)
class Hit:
    location: str
    text: str  # the value after the transformations
    transforms: tuple[str, ...]
    pattern: Any = None  # RE2 pattern that matched (for the excerpt), if any


@dataclass(slots=True)
class Ctx:
    """Per-request evaluation context."""

    view: RequestView
    now: float
    labels: list[str] = field(default_factory=list)
    label_set: set[str] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)
    exclude: tuple[str, ...] = ()  # locations not to inspect for the current rule
    only: tuple[str, ...] | None = None  # inspect only these locations (field-level count pass)

    def allowed(self, location: str) -> bool:
        if self.exclude and covers(self.exclude, location):
            return False
        return self.only is None or covers(self.only, location)

    def add_label(self, label: str) -> None:
        if label not in self.label_set:
            self.labels.append(label)
            self.label_set.add(label)
            parts = label.split(":")
            for i in range(1, len(parts)):
                self.namespaces.add(":".join(parts[:i]))


def covers(refs: tuple[str, ...], location: str) -> bool:
    """``json:/a`` covers ``json:/a`` and ``json:/a/0``; ``path_segment`` covers ``path_segment:2``."""
    for ref in refs:
        if location == ref or location.startswith((ref + "/", ref + ":")):
            return True
        if ref.endswith("*") and location.startswith(ref[:-1]):
            return True
    return False


# -- pattern classification ----------------------------------------------------------------------

PLAIN, LINE, STRICT = 0, 1, 2


def anchor_class(pattern: str) -> int:
    """PLAIN: no anchors; LINE: ``^``/``$`` only (fine on newline-joined text in multi-line mode);
    STRICT: ``\\A``, ``\\z`` or flag changes that could turn multi-line mode off."""
    cls = PLAIN
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            if not in_class and pattern[i + 1] in "Az":
                return STRICT
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if pattern.startswith("[^", i):
                i += 1
            if pattern.startswith("]", i + 1):
                i += 1
        elif c in "^$":
            cls = LINE
        elif c == "(" and pattern.startswith("(?", i):
            j = i + 2
            while j < n and pattern[j] not in ":)":
                if pattern[j] in "-m":
                    return STRICT
                j += 1
        i += 1
    return cls


def joinable(chain: tuple[str, ...], cls: int) -> bool:
    if cls == STRICT:
        return False
    if all(t in transforms.LINE_SAFE for t in chain):
        return True
    return cls == PLAIN and all(t in transforms.LINE_SAFE or t in transforms.SPACE_SAFE for t in chain)


class Bank:
    """All patterns inspected with the same transformations (and in the same phase): one RE2 search
    over the union of the fields their statements name; each leaf then keeps the values of its own
    fields."""

    def __init__(self, pipes: Pipes, chain: tuple[str, ...], joined: bool) -> None:
        self.uid = next(_bank_ids)
        self.pipes = pipes
        self.chain = chain
        self.joined = joined
        self.specs: list[FieldSpec] = []
        self.pipe: Pipe = pipes.get((), chain)
        self.sweep: Pipe | None = None  # the shared header-phase sweep under this chain
        self.body: Pipe | None = None  # this bank's body components, searched after the sweep
        self.patterns: list[str] = []
        self._index: dict[str, int] = {}
        self._alt: Any = None
        self._set: Any = None
        self._single: list[Any] = []
        self.memo = ValueMemo()  # raw value -> indices of the patterns its transformed text matches

    def add(self, pattern: str) -> int:
        if pattern not in self._index:
            self._index[pattern] = len(self.patterns)
            self.patterns.append(pattern)
        return self._index[pattern]

    def add_fields(self, fields: tuple[FieldSpec, ...]) -> None:
        for spec in fields:
            if spec not in self.specs:
                self.specs.append(spec)
        self.pipe = self.pipes.get(tuple(self.specs), self.chain)

    def compile(self) -> None:
        body = "|".join(f"(?:{p})" for p in self.patterns)
        try:
            self._alt = re2.compile(("(?m)" if self.joined else "") + body, options=_options(never_capture=True))
            self._set = re2.Set.SearchSet(_options())
            for p in self.patterns:
                self._set.Add(p)
            self._set.Compile()
        except re2.error as e:
            raise ValueError(f"cannot compile {len(self.patterns)} patterns together ({e})") from None
        self._single = [re2.compile(p, options=_options()) for p in self.patterns]

    def pattern(self, index: int) -> Any:
        return self._single[index]

    def use_sweep(self, sweep: tuple[FieldSpec, ...]) -> None:
        """Search ``sweep`` (a superset of this bank's header-phase fields) first; see the module."""
        if not self.joined:
            return
        if any(not spec.needs_body for spec in self.specs):
            # a bank over a few single values (a header, the path) reads them faster than the
            # sweep, and the sweep would find its patterns (say, a non-digit) in every request
            if not any(spec.kind in SWEPT_KINDS for spec in self.specs):
                return
            self.pipes.get(sweep, ()).sweep = True  # its text is built directly (RequestView.sweep_text)
            self.sweep = self.pipes.get(sweep, self.chain)
        body = tuple(spec for spec in self.specs if spec.needs_body)
        if body:
            self.body = self.pipes.get(body, self.chain)

    def _swept_clean(self, view: RequestView) -> bool:
        """True when neither the sweep nor this bank's body components hold a match."""
        if self.sweep is None and self.body is None:
            return False
        if view.beyond_limits():
            return False
        if self.sweep is not None:
            data = view.joined(self.sweep)
            if data and search_bytes(self._alt, data):
                return False
        if self.body is not None and view.body:  # an empty value never matches (see _match)
            data = view.joined(self.body)
            if data and search_bytes(self._alt, data):
                return False
        return True

    def hits(self, view: RequestView) -> dict[int, list[int]]:
        """pattern index -> indices (into ``view.raw(self.pipe)``) of the values it matches."""
        memo = view.bank_hits
        got: dict[int, list[int]] | None = memo.get(self.uid)
        if got is not None:
            return got
        got = {}
        if self.joined:
            if self._swept_clean(view):
                memo[self.uid] = got
                return got
            data = view.joined(self.pipe)
            if not data or not search_bytes(self._alt, data):
                memo[self.uid] = got
                return got
        remembered = self.memo
        transform = self.pipe.transform
        for i, (_, raw) in enumerate(view.raw(self.pipe)):
            matched = remembered.get(raw)
            if matched is None:
                matched = self._match(transform(raw))
                remembered.put(raw, matched)
            for j in matched:
                got.setdefault(j, []).append(i)
        memo[self.uid] = got
        return got

    def _match(self, text: str) -> tuple[int, ...]:
        """Indices of the patterns matching one transformed value."""
        if not text:
            return ()
        data = text.encode("utf-8", "replace")
        if not search_bytes(self._alt, data):
            return ()
        matched = self._set.Match(data)
        if not matched:
            # RE2::Set gives up (no match) when its DFA runs out of memory; the combined
            # pattern above falls back to the NFA, so it is the truth: ask each pattern.
            matched = [j for j, rx in enumerate(self._single) if search_bytes(rx, data)]
        return tuple(matched)


class BankRegistry:
    def __init__(self, pipes: Pipes) -> None:
        self.pipes = pipes
        self.banks: dict[tuple[tuple[str, ...], bool, bool], Bank] = {}

    def leaf(self, fields: tuple[FieldSpec, ...], chain: tuple[str, ...], patterns: list[str]) -> BankLeaf:
        own = self.pipes.get(fields, chain)  # canonical field instances and chain
        cls = max((anchor_class(p) for p in patterns), default=PLAIN)
        joined = joinable(own.chain, cls)
        key = (own.chain, own.needs_body, joined)
        bank = self.banks.get(key)
        if bank is None:
            bank = self.banks[key] = Bank(self.pipes, own.chain, joined)
        bank.add_fields(own.fields)
        return BankLeaf(bank, own, tuple(bank.add(p) for p in patterns))

    def compile(self) -> None:
        sweep = sweep_specs(spec for bank in self.banks.values() if bank.joined for spec in bank.specs)
        # the sweep pays when several banks share it; one bank reads its own fields faster
        shared = sum(1 for b in self.banks.values() if b.joined and any(s.kind in SWEPT_KINDS for s in b.specs)) > 1
        for bank in self.banks.values():
            bank.compile()
            if shared:
                bank.use_sweep(tuple(self.pipes.spec(s) for s in sweep))


def sweep_specs(specs: Iterator[FieldSpec]) -> list[FieldSpec]:
    """The header-phase components that hold every value the given specs can yield (within the
    inspection limits): one spec per family (``SWEEP_FAMILY``), names and values, no include or
    exclude lists."""
    families = {SWEEP_FAMILY[spec.kind] for spec in specs if not spec.needs_body}
    named = ("all_query_args", "all_headers", "cookies")  # names as well as values
    return [FieldSpec(f, scope="all" if f in named else "values") for f in sorted(families)]


# -- nodes ---------------------------------------------------------------------------------------


class Node:
    needs_body: bool = False
    requirement: frozenset[Atom] | None = None

    def match(self, ctx: Ctx) -> Hit | None:
        raise NotImplementedError


def _body_checks(fields: tuple[FieldSpec, ...]) -> tuple[bool, bool, bool]:
    oversize_match = any(f.needs_body and f.oversize == "match" for f in fields)
    json_match = any(f.kind == "json_body" and f.fallback == "match" for f in fields)
    json_no_match = all(f.kind == "json_body" and f.fallback == "no_match" for f in fields)
    return oversize_match, json_match, json_no_match


def _header_checks(fields: tuple[FieldSpec, ...]) -> tuple[bool, bool]:
    """(all_headers, cookies) with ``oversize: match``: beyond the limits, the statement matches."""
    headers = any(f.kind == "all_headers" and f.oversize == "match" for f in fields)
    cookies = any(f.kind == "cookies" and f.oversize == "match" for f in fields)
    return headers, cookies


class FieldLeaf(Node):
    """A leaf that inspects values of request fields (after transformations)."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.chain = pipe.chain
        self.needs_body = pipe.needs_body
        self._oversize_match, self._json_match, self._json_no_match = _body_checks(pipe.fields)
        self._headers_match, self._cookies_match = _header_checks(pipe.fields)

    def special(self, ctx: Ctx) -> Hit | bool | None:
        """Oversize and body handling decided before inspection: a Hit, False (no match) or None
        (inspect). ``no_match`` needs nothing here: the oversized component yields no values."""
        view = ctx.view
        if self._headers_match and view.headers_oversized and ctx.allowed("headers"):
            return Hit("headers", "(headers larger than the inspection limit)", ())
        if self._cookies_match and view.cookies_oversized and ctx.allowed("cookies"):
            return Hit("cookies", "(cookies larger than the inspection limit)", ())
        if view.body is None:
            return None
        if self._oversize_match and view.oversized and ctx.allowed("body"):
            return Hit("body", "(body larger than the inspection limit)", ())
        if (self._json_match or self._json_no_match) and view.body and not view.json()[0]:
            if self._json_no_match:
                return False
            if ctx.allowed("body"):
                return Hit("body", "(invalid JSON)", ())
        return None


class BankLeaf(FieldLeaf):
    def __init__(self, bank: Bank, own: Pipe, ids: tuple[int, ...]) -> None:
        super().__init__(own)
        self.bank = bank
        self.own = frozenset(own.fields)
        self.ids = ids
        if not (self._oversize_match or self._json_match or self._headers_match or self._cookies_match):
            self.requirement = frozenset((bank.uid, i) for i in ids)

    def match(self, ctx: Ctx) -> Hit | None:
        special = self.special(ctx)
        if special is not None:
            return special if isinstance(special, Hit) else None
        bank = self.bank
        hits = bank.hits(ctx.view)
        if not hits:
            return None
        pipe = bank.pipe
        owners = ctx.view.owners(pipe) if len(self.own) < len(pipe.fields) else None
        for pid in self.ids:
            for vi in hits.get(pid, ()):
                if owners is not None and owners[vi] not in self.own:
                    continue
                location = ctx.view.raw(pipe)[vi][0]
                if ctx.allowed(location):
                    return Hit(location, ctx.view.texts(pipe)[vi], self.chain, bank.pattern(pid))
        return None


class DetectorLeaf(FieldLeaf):
    """sqli / xss: libinjection over each value, results shared by rules with the same inputs."""

    def __init__(self, kind: str, pipe: Pipe, high: bool = False, memo: ValueMemo | None = None) -> None:
        super().__init__(pipe)
        self.kind = kind
        self.key = (kind, high, pipe.uid)
        self.high = high
        self.memo = memo if memo is not None else ValueMemo()  # raw value -> verdict (shared per chain)
        # over header-phase fields only: decided at once when no value of the request's sweep is
        # flagged (one verdict per request for every leaf sharing the memo)
        self._swept = all(spec.kind in SWEEP_FAMILY for spec in pipe.fields)
        self._swept_key = ("detector sweep", id(self.memo))
        self._check: Callable[[str], bool]
        if kind == "sqli":
            self._check = (lambda t: detect.is_sqli(t, high=True)) if high else detect.is_sqli
        else:
            self._check = detect.is_xss

    def match(self, ctx: Ctx) -> Hit | None:
        special = self.special(ctx)
        if special is not None:
            return special if isinstance(special, Hit) else None
        view = ctx.view
        memo = view.memo()
        if self._swept and self._sweep_clean(view, memo):
            return None
        flagged: list[int] | None = memo.get(self.key)
        if flagged is None:
            verdict = self._verdict
            seen: dict[str, bool] = {}  # bodies repeat values (enums, flags): check each one once
            flagged = []
            for i, (location, raw_text) in enumerate(view.raw(self.pipe)):
                if location == "xml":
                    continue
                hit = seen.get(raw_text)
                if hit is None:
                    hit = seen[raw_text] = verdict(raw_text)
                if hit:
                    flagged.append(i)
            memo[self.key] = flagged
        if not flagged:
            return None
        raw = view.raw(self.pipe)
        for i in flagged:
            if ctx.allowed(raw[i][0]):
                return Hit(raw[i][0], view.texts(self.pipe)[i], self.chain)
        return None

    def _sweep_clean(self, view: RequestView, memo: dict[Any, Any]) -> bool:
        """No value of the request's header-phase sweep is flagged (so none of this leaf's is)."""
        clean: bool | None = memo.get(self._swept_key)
        if clean is None:
            clean = not view.beyond_limits()
            if clean:
                verdict = self._verdict
                for raw_text in view.sweep_parts(SWEEP_ALL):
                    if verdict(raw_text):
                        clean = False
                        break
            memo[self._swept_key] = clean
        return clean

    def _verdict(self, raw_text: str) -> bool:
        """The check over one raw value through the chain, remembered across requests."""
        hit: bool | None = self.memo.get(raw_text)
        if hit is None:
            text = self.pipe.transform(raw_text)
            hit = bool(text) and self._check(text)
            self.memo.put(raw_text, hit)
        return hit


_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "le": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
    "ge": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
}


class SizeLeaf(FieldLeaf):
    def __init__(self, pipe: Pipe, comparison: str, size: int) -> None:
        super().__init__(pipe)
        self._cmp = _COMPARE[comparison]
        self.size = size
        # "larger than" over untransformed header-phase values: no value can be larger than the
        # request line and header block (RequestView.size_bound), so a small request is decided
        # without extracting anything
        self._below: int | None = None
        if not pipe.chain and not pipe.needs_body and comparison in ("gt", "ge"):
            self._below = size + 1 if comparison == "gt" else size

    def match(self, ctx: Ctx) -> Hit | None:
        special = self.special(ctx)
        if special is not None:
            return special if isinstance(special, Hit) else None
        view = ctx.view
        if self._below is not None and view.size_bound() < self._below:
            return None
        raw = view.raw(self.pipe)
        texts = view.texts(self.pipe)
        for (location, _), text in zip(raw, texts, strict=True):
            if location == "body" and not self.chain and view.body is not None:
                n = len(view.body)  # the whole body: it is all here, beyond the inspection limit too
            else:
                n = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
            if self._cmp(n, self.size) and ctx.allowed(location):
                return Hit(location, f"({n} bytes)", self.chain)
        return None


class IpLeaf(Node):
    def __init__(self, ipset: IpSet, forwarded: ForwardedIp | None) -> None:
        self.ipset = ipset
        self.forwarded = forwarded

    def match(self, ctx: Ctx) -> Hit | None:
        view = ctx.view
        header = view.header(self.forwarded.header) if self.forwarded else None
        addresses = addresses_to_inspect(view.peer, header, self.forwarded)
        if addresses is None:
            return None
        where = f"header:{self.forwarded.header}" if self.forwarded and header is not None else "client_ip"
        from addons.waf.ipsets import parse_ip

        for address in addresses:
            if parse_ip(address) is None:
                if self.forwarded is not None and self.forwarded.fallback == "match":
                    return Hit(where, address, ())
                continue
            if address in self.ipset:
                return Hit(where, address, ())
        return None


class LabelLeaf(Node):
    def __init__(self, scope: str, key: str) -> None:
        self.namespace = scope == "namespace"
        self.key = key.rstrip(":") if self.namespace else key

    def match(self, ctx: Ctx) -> Hit | None:
        if (self.key in ctx.namespaces) if self.namespace else (self.key in ctx.label_set):
            return Hit("labels", self.key, ())
        return None


def walk(node: Node) -> Iterator[Node]:
    """A statement tree's nodes, depth first."""
    yield node
    for child in getattr(node, "children", None) or ():
        yield from walk(child)
    child = getattr(node, "child", None)
    if isinstance(child, Node):
        yield from walk(child)


class And(Node):
    def __init__(self, children: list[Node]) -> None:
        self.children = children
        self.needs_body = any(c.needs_body for c in children)
        reqs = [c.requirement for c in children if c.requirement is not None]
        self.requirement = min(reqs, key=len) if reqs else None
        # cheap, header-only children first; the order never changes the result
        self.children.sort(key=lambda c: (c.needs_body, c.requirement is None))

    def match(self, ctx: Ctx) -> Hit | None:
        first = None
        for child in self.children:
            hit = child.match(ctx)
            if hit is None:
                return None
            first = first or hit
        return first


class Or(Node):
    def __init__(self, children: list[Node]) -> None:
        self.children = children
        self.needs_body = any(c.needs_body for c in children)
        reqs = [c.requirement for c in children]
        self.requirement = frozenset().union(*reqs) if all(r is not None for r in reqs) else None  # type: ignore[arg-type]

    def match(self, ctx: Ctx) -> Hit | None:
        for child in self.children:
            hit = child.match(ctx)
            if hit is not None:
                return hit
        return None


class Not(Node):
    def __init__(self, child: Node) -> None:
        self.child = child
        self.needs_body = child.needs_body

    def match(self, ctx: Ctx) -> Hit | None:
        saved = ctx.exclude, ctx.only
        ctx.exclude, ctx.only = (), None  # exclusions narrow what matches; they never widen a "not"
        try:
            inner = self.child.match(ctx)
        finally:
            ctx.exclude, ctx.only = saved
        return Hit("(not)", "", ()) if inner is None else None


def byte_pattern(match: str, value: str) -> str:
    lit = re2.escape(value)
    if match == "exactly":
        return rf"\A{lit}\z"
    if match == "starts_with":
        return rf"\A{lit}"
    if match == "ends_with":
        return rf"{lit}\z"
    if match == "contains_word":
        return rf"\b{lit}\b"
    return str(lit)


def regex_text(compiled: Any) -> str:
    pattern = compiled.pattern
    return pattern if isinstance(pattern, str) else re.escape(pattern.decode())
