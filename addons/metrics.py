"""Prometheus metrics, served by the admin endpoint (``addons/admin.py``).

One registry per Sidegate instance (not the process-global default), so tests and embedders
can run several gateways side by side. Label values are route keys, plugin names, reason codes
and statuses: a small, fixed vocabulary, never request data.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from addons.lifecycle import CHECKPOINTS
from addons.waf.metrics import WafMatchCollector

LATENCY_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.05,
    0.25,
    1.0,
    5.0,
    30.0,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sidegate_requests",
            "Requests answered, by route, status and outcome.",
            ["route", "status", "outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "sidegate_rejections",
            "Rejections decided by plugins (enforced=false: report-only).",
            ["plugin", "reason", "enforced"],
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "sidegate_checkpoint_seconds",
            "Time spent in each checkpoint's plugins (the backend call excluded).",
            ["checkpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.integration_seconds = Histogram(
            "sidegate_integration_seconds", "Backend call duration.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.reloads = Counter(
            "sidegate_policy_reloads", "Policy loads and reloads, by result.", ["result"], registry=r
        )
        self.generation = Gauge(
            "sidegate_policy_generation", "Generation number of the policy set serving now.", registry=r
        )
        self.ready = Gauge("sidegate_ready", "1 once a policy set is loaded.", registry=r)
        self.degraded = Gauge(
            "sidegate_store_degraded",
            "1 while a plugin's shared store (Redis) is unavailable and on_store_error applies.",
            ["plugin"],
            registry=r,
        )
        self._checkpoint_children = {c: self.checkpoint_seconds.labels(c) for c in CHECKPOINTS}
        r.register(WafMatchCollector())  # waf_rule_matches_total{rule,action}
        for result in ("ok", "failed"):
            self.reloads.labels(result)

    def rejection(self, plugin: str, reason: str, enforced: bool) -> None:
        self.rejections.labels(plugin, reason, "true" if enforced else "false").inc()

    def observe(self, route: str, status: int | None, outcome: str, checkpoint_us: dict[str, int]) -> None:
        self.requests.labels(route, str(status) if status is not None else "none", outcome).inc()
        for name, us in checkpoint_us.items():
            child = self._checkpoint_children.get(name)
            if child is not None:
                child.observe(us / 1_000_000)

    def render(self, plugins: tuple[object, ...] = ()) -> bytes:
        for plugin in plugins:
            degraded = getattr(plugin, "degraded", None)
            if degraded is not None:
                self.degraded.labels(getattr(plugin, "name", type(plugin).__name__)).set(1 if degraded else 0)
        return generate_latest(self.registry)
