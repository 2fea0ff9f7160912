"""The immutable PolicySet: every document of a policy directory, compiled for request time."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from addons.gateway_responses import Responder
from addons.plugins import CHECKPOINT_METHODS, PluginSlot, instantiate, slots_for
from addons.policy.errors import PolicyError, PolicyIssue
from addons.policy.loader import Document, load_documents
from addons.policy.models import ApiPolicy, GatewayResponsesPolicy, PluginPolicy
from addons.policy.types import Mode, Secret
from addons.router import RouterPlugin

_generations = itertools.count(1)


@dataclass(frozen=True)
class PolicySet:
    api: ApiPolicy
    api_source: str | None
    responder: Responder
    plugins: dict[str, tuple[PluginSlot, ...]]  # checkpoint method -> ordered slots
    documents: tuple[Document, ...] = ()
    secrets: tuple[Secret, ...] = ()
    generation: int = field(default_factory=lambda: next(_generations))

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for d in self.documents:
            kinds[type(d.model).__name__] = kinds.get(type(d.model).__name__, 0) + 1
        routes = len(self.api.routes)
        plugins = sorted({s.name for slots in self.plugins.values() for s in slots})
        return f"{len(self.documents)} documents, {routes} routes, plugins: {', '.join(plugins) or 'none'}"


def build_policy_set(documents: list[Document], global_mode: Mode = "enforce") -> PolicySet:
    """Compile validated documents; cross-document problems raise PolicyError."""
    issues: list[PolicyIssue] = []
    api_docs = [d for d in documents if isinstance(d.model, ApiPolicy)]
    gr_docs = [d for d in documents if isinstance(d.model, GatewayResponsesPolicy)]
    for docs, kind in ((api_docs, "Api"), (gr_docs, "GatewayResponses")):
        for extra in docs[1:]:
            issues.append(
                PolicyIssue(
                    extra.path, extra.line, 1, "kind", f"a second {kind} document (the first is {docs[0].source})"
                )
            )
    api_doc = api_docs[0] if api_docs else None
    api = api_doc.model if api_doc else ApiPolicy(kind="Api")
    assert isinstance(api, ApiPolicy)
    gr = gr_docs[0].model if gr_docs else None
    assert gr is None or isinstance(gr, GatewayResponsesPolicy)

    def enforced(doc_mode: Mode | None) -> bool:
        return (doc_mode or global_mode) == "enforce"

    slots: dict[str, list[PluginSlot]] = {m: [] for m in CHECKPOINT_METHODS}
    router = RouterPlugin(api, api_doc.source_of("routes") if api_doc else "<default>")
    for method, slot in slots_for(router, enforced=enforced(api.mode), source=router.source).items():
        slots[method].append(slot)
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
        for method, slot in slots_for(plugin, enforced=enforced(doc.model.mode), source=doc.source).items():
            slots[method].append(slot)
    if issues:
        raise PolicyError(issues)
    return PolicySet(
        api=api,
        api_source=api_doc.source if api_doc else None,
        responder=Responder(gr),
        plugins={k: tuple(v) for k, v in slots.items()},
        documents=tuple(documents),
        secrets=tuple(_secrets(d.model for d in documents)),
    )


def load_policy_set(directory: Path | str, global_mode: Mode = "enforce") -> PolicySet:
    return build_policy_set(load_documents(Path(directory)), global_mode)


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
