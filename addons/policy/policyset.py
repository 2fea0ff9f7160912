"""The immutable PolicySet: every document of a policy directory, compiled for request time."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from pydantic import BaseModel

from addons.cors import Cors
from addons.gateway_responses import Responder
from addons.mapping import IntegrationMapping, compile_integrations
from addons.mtls import ClientTls
from addons.mtls.models import ClientTlsPolicy
from addons.origin_verify import OriginVerify
from addons.plugins import CHECKPOINT_METHODS, PluginSlot, instantiate, slots_for
from addons.policy.errors import PolicyError, PolicyIssue
from addons.policy.loader import Document, load_documents
from addons.policy.models import (
    KINDS,
    ApiPolicy,
    CorsPolicy,
    GatewayResponsesPolicy,
    OriginVerifyPolicy,
    PluginPolicy,
    ThrottlePolicy,
    UsagePlansPolicy,
)
from addons.policy.types import Mode, PolicyModel, Secret
from addons.router import RouterPlugin
from addons.routing import Router
from addons.throttle import make_throttle, redis_store
from addons.throttle.plans import ApiKeys, QuotaCommit, QuotaStore, RedisQuotaStore
from addons.validation import RequestValidation, compile_routes
from addons.vtl import TemplateError
from addons.waf import Waf
from addons.waf.models import WebAclPolicy

_generations = itertools.count(1)


@dataclass(frozen=True)
class PolicySet:
    api: ApiPolicy
    api_source: str | None
    router: Router
    responder: Responder
    plugins: dict[str, tuple[PluginSlot, ...]]  # checkpoint method -> ordered slots
    documents: tuple[Document, ...] = ()
    secrets: tuple[Secret, ...] = ()
    watched_files: tuple[Path, ...] = ()  # secret files: a change there reloads too
    instances: tuple[object, ...] = ()  # the compiled plugins, for health and admin views
    client_tls: ClientTls | None = None  # read at each handshake, so a reload applies to new ones
    generation: int = field(default_factory=lambda: next(_generations))

    def summary(self) -> str:
        routes = len(self.api.routes)
        plugins = sorted({s.name for slots in self.plugins.values() for s in slots})
        return f"{len(self.documents)} documents, {routes} routes, plugins: {', '.join(plugins) or 'none'}"


def _single(documents: list[Document], kind: type[PolicyModel], issues: list[PolicyIssue]) -> Document | None:
    docs = [d for d in documents if isinstance(d.model, kind)]
    for extra in docs[1:]:
        name = next(k for k, model in KINDS.items() if model is kind)
        issues.append(
            PolicyIssue(extra.path, extra.line, 1, "kind", f"a second {name} document (the first is {docs[0].source})")
        )
    return docs[0] if docs else None


def _check_route_refs(doc: Document, field: str, keys: list[str], api: ApiPolicy, issues: list[PolicyIssue]) -> None:
    """A route named in another kind must exist in the Api: a typo must never silently do nothing."""
    for i, key in enumerate(keys):
        if key not in api.routes:
            line, col = doc.positions.get((field, i), doc.positions.get((field, key), (doc.line, 1)))
            issues.append(PolicyIssue(doc.path, line, col, f"{field}", f"route {key!r} is not declared in the Api"))


def build_policy_set(documents: list[Document], global_mode: Mode = "enforce", root: Path | None = None) -> PolicySet:
    """Compile validated documents; cross-document problems raise PolicyError.

    ``root`` is the policy directory's parent: relative paths in policies start there.
    """
    root = root or Path()
    issues: list[PolicyIssue] = []
    api_doc = _single(documents, ApiPolicy, issues)
    gr_doc = _single(documents, GatewayResponsesPolicy, issues)
    cors_doc = _single(documents, CorsPolicy, issues)
    ov_doc = _single(documents, OriginVerifyPolicy, issues)
    api = api_doc.model if api_doc else ApiPolicy(kind="Api")
    assert isinstance(api, ApiPolicy)

    def enforced(doc_mode: Mode | None) -> bool:
        return (doc_mode or global_mode) == "enforce"

    # Built-in concerns in pipeline order: the origin secret before anything spends work, CORS
    # preflights before routing (browsers preflight paths that have no OPTIONS route), then routing.
    builtins: list[tuple[object, bool, str]] = []
    client_tls: ClientTls | None = None
    mtls_doc = _single(documents, ClientTlsPolicy, issues)
    if mtls_doc is not None:
        assert isinstance(mtls_doc.model, ClientTlsPolicy)
        mtls_on = enforced(mtls_doc.model.mode)
        try:
            client_tls = ClientTls(mtls_doc.model, mtls_doc.source, enforced=mtls_on)
        except (SSL.Error, ValueError) as e:
            issues.append(PolicyIssue(mtls_doc.path, mtls_doc.line, 1, "", f"cannot build the TLS context ({e})"))
        else:
            builtins.append((client_tls, mtls_on, mtls_doc.source))
    if ov_doc is not None:
        ov = ov_doc.model
        assert isinstance(ov, OriginVerifyPolicy)
        _check_route_refs(ov_doc, "exempt_routes", ov.exempt_routes, api, issues)
        builtins.append((OriginVerify(ov, ov_doc.source), enforced(ov.mode), ov_doc.source))
    if cors_doc is not None:
        cors = cors_doc.model
        assert isinstance(cors, CorsPolicy)
        _check_route_refs(cors_doc, "routes", list(cors.routes), api, issues)
        builtins.append(
            (Cors(cors, cors_doc.source, enforced=enforced(cors.mode)), enforced(cors.mode), cors_doc.source)
        )
    routes_source = api_doc.source_of("routes") if api_doc else "<default>"
    builtins.append((RouterPlugin(routes_source), enforced(api.mode), routes_source))
    try:
        integrations = compile_integrations(api, api_doc.source_of if api_doc else lambda *_: "<default>")
    except TemplateError as e:
        assert api_doc is not None
        _, _, at = e.source.rpartition(":")
        where = f"template line {e.line}: " if e.line is not None else ""
        issues.append(PolicyIssue(api_doc.path, int(at) if at.isdigit() else None, 1, "template", where + e.problem))
        integrations = {}
    waf_doc = _single(documents, WebAclPolicy, issues)
    if waf_doc is not None:
        acl = waf_doc.model
        assert isinstance(acl, WebAclPolicy)
        for i, exclusion in enumerate(acl.exclusions):
            for j, key in enumerate(exclusion.routes):
                if key not in api.routes:
                    line, col = waf_doc.positions.get(("exclusions", i, "routes", j), (waf_doc.line, 1))
                    where = f"exclusions[{i}].routes[{j}]"
                    message = f"route {key!r} is not declared in the Api"
                    issues.append(PolicyIssue(waf_doc.path, line, col, where, message))
        try:
            waf = Waf(acl, waf_doc.source, enforced=enforced(acl.mode), positions=waf_doc.positions)
        except ValueError as e:
            issues.append(PolicyIssue(waf_doc.path, waf_doc.line, 1, "rules", str(e)))
        else:
            # WAF first after routing: API Gateway evaluates AWS WAF before keys, throttles, validation.
            builtins.append((waf, enforced(acl.mode), waf_doc.source))
    if any(c.spec.type != "http_proxy" or c.parameters for c in integrations.values()) or any(
        r.validate_responses for r in api.routes.values()
    ):
        builtins.append((IntegrationMapping(integrations, routes_source), True, routes_source))
    plans_doc = _single(documents, UsagePlansPolicy, issues)
    throttle_doc = _single(documents, ThrottlePolicy, issues)
    keys: ApiKeys | None = None
    if plans_doc is not None:
        plans = plans_doc.model
        assert isinstance(plans, UsagePlansPolicy)
        for plan in plans.plans.values():
            _check_route_refs(plans_doc, "plans", list(plan.routes), api, issues)
        quota_path = (root / plans.quota_file).resolve()
        shared = None
        on_error = "allow"
        if throttle_doc is not None:
            tp = throttle_doc.model
            assert isinstance(tp, ThrottlePolicy)
            on_error = tp.on_store_error
            if tp.store != "memory":  # quotas live where the buckets live
                shared = RedisQuotaStore(
                    redis_store(tp.store, tp.password.reveal() if tp.password else None, tp.store_timeout)
                )
        keys = ApiKeys(plans, api, plans_doc.source, quota_store(quota_path), shared=shared, on_store_error=on_error)
        builtins.append((keys, enforced(plans.mode), plans_doc.source))
    elif any(r.api_key_required for r in api.routes.values()) and api_doc is not None:
        line, col = api_doc.positions.get(("routes",), (api_doc.line, 1))
        issues.append(
            PolicyIssue(
                api_doc.path, line, col, "routes", "routes require an API key, but no UsagePlans document declares keys"
            )
        )
    throttle_policy = throttle_doc.model if throttle_doc else (ThrottlePolicy(kind="Throttle") if keys else None)
    if throttle_policy is not None:
        assert isinstance(throttle_policy, ThrottlePolicy)
        source = throttle_doc.source if throttle_doc else (plans_doc.source if plans_doc else "<default>")
        if throttle_doc is not None:
            _check_route_refs(throttle_doc, "routes", list(throttle_policy.routes), api, issues)
        throttle_on = enforced(throttle_policy.mode)
        # The plugin applies per-tier modes itself, so it always runs "enforced" for the runner.
        builtins.append((make_throttle(throttle_policy, api, source, enforced=throttle_on), True, source))
    if keys is not None:
        builtins.append((QuotaCommit(keys), True, keys.source))
    # API Gateway validates the request after the usage plan and throttle checks.
    validations = compile_routes(api)
    if validations:
        builtins.append((RequestValidation(validations, routes_source), enforced(api.mode), routes_source))

    user: list[tuple[object, bool, str]] = []
    for doc in documents:
        if not isinstance(doc.model, PluginPolicy):
            continue
        try:
            plugin = instantiate(doc.model.use, doc.model.config)
        except ValueError as e:
            line, col = doc.positions.get(("use", "<value>"), (doc.line, 1))
            issues.append(PolicyIssue(doc.path, line, col, "use", str(e)))
            continue
        if doc.model.name:
            try:
                plugin.name = doc.model.name  # type: ignore[attr-defined]
            except AttributeError:
                pass
        user.append((plugin, enforced(doc.model.mode), doc.source))
    if issues:
        raise PolicyError(issues)

    compiled = [
        (slots_for(plugin, enforced=is_enforced, source=source), is_builtin)
        for group, is_builtin in ((builtins, True), (user, False))
        for plugin, is_enforced, source in group
    ]
    slots: dict[str, list[PluginSlot]] = {m: [] for m in CHECKPOINT_METHODS}
    for methods, _ in compiled:  # request side: built-ins first, in pipeline order
        for method, slot in methods.items():
            if method != "method_response":
                slots[method].append(slot)
    # Method response: user plugins first, so the built-ins (CORS) decorate the final answer.
    for methods, _ in sorted(compiled, key=lambda c: c[1]):
        if "method_response" in methods:
            slots["method_response"].append(methods["method_response"])
    secrets = tuple(_secrets(d.model for d in documents))
    return PolicySet(
        api=api,
        api_source=api_doc.source if api_doc else None,
        router=Router(api.route_keys()),
        responder=Responder(gr_doc.model if gr_doc else None),  # type: ignore[arg-type]
        plugins={k: tuple(v) for k, v in slots.items()},
        documents=tuple(documents),
        secrets=secrets,
        # certificate bundles and CRLs too: a CRL update alone reloads
        watched_files=tuple(s.path for s in secrets if s.path is not None) + (client_tls.files if client_tls else ()),
        client_tls=client_tls,
        instances=tuple(plugin for plugin, _, _ in builtins + user),
    )


def load_policy_set(directory: Path | str, global_mode: Mode = "enforce") -> PolicySet:
    directory = Path(directory)
    return build_policy_set(load_documents(directory), global_mode, directory.resolve().parent)


_quota_stores: dict[Path, QuotaStore] = {}


def quota_store(path: Path) -> QuotaStore:
    """One SQLite connection per quota file for the life of the process (reloads reuse it)."""
    if path not in _quota_stores:
        _quota_stores[path] = QuotaStore(path)
    return _quota_stores[path]


def empty_policy_set(global_mode: Mode = "enforce") -> PolicySet:
    return build_policy_set([], global_mode)


def _secrets(models: Iterator[Any] | Any) -> Iterator[Secret]:
    for obj in models:
        yield from _walk(obj)


def _walk(obj: Any) -> Iterator[Secret]:
    if isinstance(obj, Secret):
        yield obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from _walk(getattr(obj, name))
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _walk(v)
