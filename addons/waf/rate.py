"""Counters for rate-based rules: requests per aggregation key over a sliding window.

The window is approximated the usual way (as Cloudflare and nginx do): the current fixed window's
count plus the previous window's count weighted by how much of it still overlaps. The in-memory
store is bounded (least recently used keys are evicted); a shared store (Redis, for replicas)
implements the same ``hit`` method.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from addons.waf.ipsets import addresses_to_inspect, parse_ip
from addons.waf.models import ForwardedIp, RateBased
from addons.waf.statements import Ctx, Hit, Node

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_MAX_KEYS = 100_000


class RateStore(Protocol):
    def hit(self, key: str, window: float, now: float) -> float:
        """Count one request for ``key``; return the requests in the trailing window, this one included."""
        ...


class MemoryRateStore:
    name = "memory"

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._keys: OrderedDict[str, tuple[int, int, int]] = OrderedDict()  # key -> (window index, current, previous)

    def __len__(self) -> int:
        return len(self._keys)

    def hit(self, key: str, window: float, now: float) -> float:
        index = int(now // window)
        state = self._keys.get(key)
        if state is None or state[0] < index - 1:
            current, previous = 1, 0
        elif state[0] == index - 1:
            current, previous = 1, state[1]
        else:
            current, previous = state[1] + 1, state[2]
        self._keys[key] = (index, current, previous)
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        overlap = 1.0 - (now - index * window) / window
        return current + previous * overlap


@dataclass(slots=True)
class RateLeaf(Node):
    rule_id: str
    spec: RateBased
    scope_down: Node | None
    store: RateStore
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.needs_body = self.scope_down.needs_body if self.scope_down else False
        self.requirement = None

    def match(self, ctx: Ctx) -> Hit | None:
        if self.scope_down is not None and self.scope_down.match(ctx) is None:
            return None
        parts = []
        for key in self.spec.key:
            value = _key_part(key, ctx, self.spec.forwarded_ip)
            if value is None:
                return None  # forwarded header absent: AWS WAF skips the rule for this request
            parts.append(value)
        digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:20]
        count = self.store.hit(f"waf:{self.rule_id}:{digest}", float(self.spec.window), self.clock())
        if count > self.spec.limit:
            return Hit("rate", f"{count:.0f} requests in {self.spec.window}s (limit {self.spec.limit})", ())
        return None


def _key_part(key: str, ctx: Ctx, forwarded: ForwardedIp | None) -> str | None:
    view = ctx.view
    if key == "ip":
        return view.peer
    if key == "forwarded_ip":
        assert forwarded is not None  # validated at load
        header = view.header(forwarded.header)
        addresses = addresses_to_inspect(view.peer, header, forwarded.model_copy(update={"position": "first"}))
        if not addresses:
            return None
        return addresses[0] if parse_ip(addresses[0]) is not None else "malformed"
    if key == "method":
        return view.method
    if key == "uri_path":
        return view.raw_path
    if key == "query_string":
        return view.raw_query
    if key == "constant":
        return ""
    kind, _, name = key.partition(":")
    if kind == "header":
        return view.header(name.lower()) or ""
    if kind == "cookie":
        return next((v for n, v in view.cookies() if n == name), "")
    if kind == "query_arg":
        return next((v for n, _, v in view.query_args() if n == name.lower()), "")
    if kind == "label_namespace":
        prefix = name.rstrip(":") + ":"
        return ",".join(sorted(label for label in ctx.labels if label.startswith(prefix)))
    return ""
