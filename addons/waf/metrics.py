"""``waf_rule_matches_total{rule,action}``: every rule match, count-mode and report-only included.

Counts live in this process (they survive policy reloads, as Prometheus counters should); a
collector exposes them on any registry: ``registry.register(WafMatchCollector())``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_lock = threading.Lock()
RULE_MATCHES: Counter[tuple[str, str]] = Counter()


def record(rule: str, action: str) -> None:
    with _lock:
        RULE_MATCHES[(rule, action)] += 1


class WafMatchCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "waf_rule_matches",
            "WAF rule matches by rule id and action (count and report-only too).",
            labels=["rule", "action"],
        )
        with _lock:
            items = list(RULE_MATCHES.items())
        for (rule, action), n in sorted(items):
            family.add_metric([rule, action], n)
        yield family
