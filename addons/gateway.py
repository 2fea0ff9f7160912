"""The one top-level mitmproxy addon: options, the policy set, hot reload, admin endpoint, records.

The four checkpoints are nested under it (``self.addons``), which mitmproxy walks far more
cheaply than extra top-level addons (DESIGN.md section 6). Their order is the pipeline order.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http, tls
from mitmproxy.addonmanager import Loader
from mitmproxy.connection import Client
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

from addons.admin import AdminServer, parse_listen
from addons.decision import METADATA_KEY, Exchange
from addons.errorpages import ErrorPages
from addons.integration import Integrations
from addons.lifecycle import IntegrationRequest, IntegrationResponse, MethodRequest, MethodResponse
from addons.logs import AccessLog
from addons.metrics import Metrics
from addons.policy.errors import PolicyError
from addons.policy.loader import policy_files
from addons.policy.policyset import PolicySet, load_policy_set
from addons.policy.types import parse_duration
from addons.throttle.report import describe_keys

log = logging.getLogger("sidegate")

_EXCHANGE_ATTR = "_sidegate_exchange"
DEFAULT_BODY_LIMIT = "10m"  # API Gateway's payload limit (10 MB)
MARK_REJECTED = ":no_entry:"
MARK_REPORTED = ":warning:"


class Sidegate:
    def __init__(self) -> None:
        self.policy: PolicySet | None = None
        self.metrics = Metrics()
        self.access_log = AccessLog()
        self.errorpages = ErrorPages()
        self.integrations = Integrations(self)
        self.admin = AdminServer(
            lambda: self.metrics.render(self.policy.instances if self.policy else ()),
            lambda: self.policy is not None,
            lambda: describe_keys(self.policy.instances if self.policy else ()),
        )
        self.default_upstream: str | None = None
        self.request_id_header = "x-amzn-RequestId"
        self.reload_interval = 1.0
        self._signature: tuple[Any, ...] | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._running = False
        self.method_response = MethodResponse(self)
        self.addons = [MethodRequest(self), IntegrationRequest(self), IntegrationResponse(self), self.method_response]

    # -- mitmproxy lifecycle ------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option("sidegate_policies", str, "policies", "Directory of sidegate policy files (YAML).")
        loader.add_option(
            "sidegate_mode",
            str,
            "enforce",
            "Global default mode for policy documents without their own: enforce or report "
            "(report records, logs and counts decisions and lets every request pass).",
            choices=("enforce", "report"),
        )
        loader.add_option(
            "sidegate_admin", str, "127.0.0.1:9901",
            "Admin endpoint HOST:PORT for /metrics, /healthz and /readyz; empty disables it.",
        )  # fmt: skip
        loader.add_option(
            "sidegate_access_log", str, "-", "Where the per-request JSON log lines go: - for stdout, or a file path."
        )
        loader.add_option(
            "sidegate_reload_interval", str, "1s",
            "How often the policy directory is checked for changes (e.g. 1s, 500ms); 0 disables hot reload.",
        )  # fmt: skip
        loader.add_option(
            "sidegate_request_id_header", str, "x-amzn-RequestId", "Response header carrying the request id."
        )

    def configure(self, updated: set[str]) -> None:
        if "mode" in updated:
            self.default_upstream = reverse_target(ctx.options.mode)
        if "body_size_limit" in updated and not ctx.options.body_size_limit:
            # Without a limit mitmproxy buffers any body; API Gateway refuses bodies over 10 MB.
            ctx.options.body_size_limit = DEFAULT_BODY_LIMIT
        if "sidegate_access_log" in updated:
            self.access_log.open(ctx.options.sidegate_access_log)
        if "sidegate_reload_interval" in updated:
            try:
                self.reload_interval = parse_duration(ctx.options.sidegate_reload_interval)
            except ValueError as e:
                raise exceptions.OptionsError(f"sidegate_reload_interval: {e}") from None
        if "sidegate_request_id_header" in updated:
            self.request_id_header = ctx.options.sidegate_request_id_header
        if "sidegate_admin" in updated and ctx.options.sidegate_admin:
            try:
                parse_listen(ctx.options.sidegate_admin)
            except ValueError as e:
                raise exceptions.OptionsError(f"sidegate_admin: {e}") from None
        if updated & {"sidegate_policies", "sidegate_mode"}:
            self.reload(initial=self.policy is None)

    async def running(self) -> None:
        self._running = True
        self.errorpages.install()
        settle_heap()
        if ctx.options.sidegate_admin:
            host, port = parse_listen(ctx.options.sidegate_admin)
            try:
                await self.admin.start(host, port)
            except OSError as e:
                log.error("sidegate: cannot start the admin endpoint on %s: %s", ctx.options.sidegate_admin, e)
        if self.reload_interval > 0:
            self._reload_task = asyncio.create_task(self._watch(), name="sidegate policy watcher")

    async def done(self) -> None:
        if self._reload_task is not None:
            self._reload_task.cancel()
        await self.integrations.close()
        await self.admin.stop()
        self.access_log.close()

    def client_disconnected(self, client: Client) -> None:
        self.errorpages.forget(client.id)

    # -- client TLS (kind: ClientTls): the current policy set's context at each handshake ----------

    def tls_start_client(self, data: tls.TlsData) -> None:
        client_tls = self.policy.client_tls if self.policy is not None else None
        if client_tls is not None:
            client_tls.tls_start_client(data)

    def tls_established_client(self, data: tls.TlsData) -> None:
        client_tls = self.policy.client_tls if self.policy is not None else None
        if client_tls is not None:
            self._count_tls_failure(client_tls.tls_established_client(data))

    def tls_failed_client(self, data: tls.TlsData) -> None:
        client_tls = self.policy.client_tls if self.policy is not None else None
        if client_tls is not None:
            self._count_tls_failure(client_tls.tls_failed_client(data))

    def _count_tls_failure(self, failure: Any) -> None:
        if failure is not None:
            self.metrics.rejection("client_tls", failure["reason"], failure["enforced"])

    # -- policy set ---------------------------------------------------------------------------

    def reload(self, *, initial: bool = False) -> bool:
        """Build a complete new PolicySet and swap it in, or keep the last good one serving."""
        directory = Path(ctx.options.sidegate_policies)
        try:
            new = load_policy_set(directory, ctx.options.sidegate_mode)
        except PolicyError as e:
            # Remember what was seen, so the same broken state is reported once, not every interval.
            self._signature = _signature(directory, self.policy.watched_files if self.policy else ())
            self.metrics.reloads.labels("failed").inc()
            if initial:
                raise exceptions.OptionsError(f"invalid policy set in {directory}:\n{e}") from None
            for issue in e.issues:
                log.error("sidegate: policy reload rejected, the last good policy set keeps serving: %s", issue)
            return False
        self.install(new)
        if self._running:
            settle_heap()  # the replaced set's cycles are collected, the new set is set aside
        self._signature = _signature(directory, new.watched_files)
        self.metrics.reloads.labels("ok").inc()
        log.info("sidegate: policy generation %d loaded from %s (%s)", new.generation, directory, new.summary())
        return True

    def install(self, policy: PolicySet) -> None:
        self.policy = policy  # one reference swap: in-flight flows keep the set they started with
        if policy.client_tls is not None:
            policy.client_tls.log_warnings()
        self.metrics.generation.set(policy.generation)
        self.metrics.ready.set(1)
        self.access_log.set_secrets(tuple(s.reveal() for s in policy.secrets))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                directory = Path(ctx.options.sidegate_policies)
                watched = self.policy.watched_files if self.policy else ()
                if _signature(directory, watched) != self._signature:
                    self.reload()
            except Exception:  # the watcher must survive anything a file system can do
                log.exception("sidegate: policy watcher failed; retrying")

    # -- per-flow state -----------------------------------------------------------------------

    def exchange(self, flow: http.HTTPFlow, *, create: bool = True) -> Exchange | None:
        ex: Exchange | None = getattr(flow, _EXCHANGE_ATTR, None)
        if ex is not None and ex.finished and create and flow.response is None:
            ex = None  # a replay (mitmweb, replay.client) runs the pipeline again, with today's policy
        if ex is None and create and self.policy is not None:
            ex = Exchange(flow, self.policy)
            flow.metadata[METADATA_KEY] = {
                "request_id": ex.request_id,
                "policy_generation": self.policy.generation,
                "trace": ex.trace,
            }
            setattr(flow, _EXCHANGE_ATTR, ex)
        return ex

    def finish(self, ex: Exchange, *, error: str | None = None) -> None:
        """Record the request once: metadata, comment, mark, metrics, one JSON log line."""
        ex.finished = True
        flow = ex.flow
        for name, placeholder in ex.redact_headers.items():
            if name in flow.request.headers:
                flow.request.headers[name] = placeholder
        status = flow.response.status_code if flow.response is not None else None
        rejection = ex.rejection
        if rejection is not None:
            outcome = "rejected"
        elif ex.answered_by is not None:
            outcome = "answered"
        elif status is None:
            outcome = "error"
        else:
            outcome = "allowed"
        route = ex.route.key if ex.route else None
        reports = [{"plugin": p, "reason": r.reason, "rule": r.rule} for p, r in ex.report_only]
        flags = [{"plugin": p, "reason": f.reason, "rule": f.rule} for p, f in ex.flags]
        meta = flow.metadata.setdefault(METADATA_KEY, {})
        meta.update(
            {
                "route": route,
                "status": status,
                "outcome": outcome,
                "rejected_by": ex.rejected_by,
                "reason": rejection.reason if rejection else None,
                "report_only": reports,
                "flags": flags,
                "answered_by": ex.answered_by,
                "checkpoint_us": dict(ex.checkpoint_us),
            }
        )
        if error is not None:
            meta["error"] = error
        flow.comment = _summary(ex, status, outcome, error)
        if rejection is not None:
            flow.marked = MARK_REJECTED
        elif reports or outcome == "error":
            flow.marked = MARK_REPORTED
        elif flow.marked in (MARK_REJECTED, MARK_REPORTED):
            flow.marked = ""  # our own mark from an earlier run of a replayed flow
        self.metrics.observe(route or "none", status, outcome, ex.checkpoint_us)
        if "integration_us" in ex.vars:
            self.metrics.integration_seconds.observe(ex.vars["integration_us"] / 1_000_000)
        self.access_log.write(
            request_id=ex.request_id,
            route=route,
            method=flow.request.method,
            path=ex.path,
            status=status,
            outcome=outcome,
            plugin=ex.rejected_by,
            reason=rejection.reason if rejection else None,
            rule=rejection.rule if rejection else None,
            report_only=reports or None,
            flags=flags or None,
            checkpoint_us=ex.checkpoint_us,
            integration_us=ex.vars.get("integration_us"),
            policy_generation=ex.policy.generation,
            error=error,
        )


def settle_heap() -> None:
    """Set the long-lived objects aside from the cyclic garbage collector.

    After startup the heap holds some hundreds of thousands of objects that live as long as the
    process (mitmproxy, the policy set, compiled rules). Each request leaves cyclic garbage
    behind (in mitmproxy, aiohttp and exception tracebacks), so the collector runs often (about
    10% of a busy sidecar's CPU), and every full collection walked all of those objects: 88 ms
    each, 19 ms with them set aside. ``gc.freeze`` moves what exists now into a generation the
    collector skips. On a reload the earlier objects are returned first (``gc.unfreeze``) and
    collected with the replaced policy set, so nothing that becomes garbage later stays behind.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _summary(ex: Exchange, status: int | None, outcome: str, error: str | None) -> str:
    route = ex.route.key if ex.route else "no route"
    if ex.rejection is not None:
        r = ex.rejection
        text = f"sidegate: {status} {r.response_type} by {ex.rejected_by} ({r.reason})"
        if r.source:
            text += f" [{r.source}]"
    elif ex.answered_by is not None:
        text = f"sidegate: {status} answered by {ex.answered_by}"
    elif outcome == "error":
        text = f"sidegate: {route} -> no response ({error or 'error'})"
    else:
        text = f"sidegate: {route} -> {status}"
    if ex.flags:
        text += "; " + ", ".join(f"{p} ({f.reason})" for p, f in ex.flags)
    if ex.report_only:
        would = ", ".join(f"{p} ({r.reason})" for p, r in ex.report_only)
        text += f"; report-only, would reject: {would}"
    return text


def _signature(directory: Path, extra: tuple[Path, ...] = ()) -> tuple[Any, ...]:
    """What the watcher compares: policy files and the secret files they reference."""
    out: list[Any] = []
    for p in [*policy_files(directory), *extra] if directory.is_dir() else extra:
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), None))
    return tuple(out)


def reverse_target(modes: Any) -> str | None:
    """mitmproxy's reverse-mode target as a base URL: the sidecar's service by default."""
    for spec in modes or ():
        try:
            mode = ProxyMode.parse(spec)
        except ValueError:
            continue
        if isinstance(mode, ReverseMode) and mode.scheme in ("http", "https"):
            host, port = mode.address
            host = f"[{host}]" if ":" in host else host
            return f"{mode.scheme}://{host}:{port}"
    return None
