"""The plugin interface: one concern per class, with a method per checkpoint it takes part in.

A plugin is any object with a ``name`` and one or more of these methods, each taking the
:class:`~addons.decision.Exchange` and returning ``None`` (continue) or a
:class:`~addons.decision.Reject`; each may be ``async``:

- ``method_request(ex)``: request headers are in, the body may not be (mitmproxy ``requestheaders``)
- ``method_request_body(ex)``: the whole request is in (mitmproxy ``request``)
- ``integration_request(ex)``: just before the backend call; may rewrite the request
- ``integration_response(ex)``: the backend's answer (never runs for gateway answers)
- ``method_response(ex)``: every answer, gateway responses included (decorate only)

Third-party plugins are named in policy (``kind: Plugin``) by entry point (group
``sidegate.plugins``) or ``module:Class``; the class is called with the document's ``config``
mapping. The checkpoint runner, not the plugin, skips decided flows, fails closed on exceptions,
records the trace and applies rejections.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from addons.decision import Exchange, Reject

ENTRY_POINT_GROUP = "sidegate.plugins"
CHECKPOINT_METHODS = (
    "method_request",
    "method_request_body",
    "integration_request",
    "integration_response",
    "method_response",
)

PluginResult = Reject | None
PluginMethod = Callable[[Exchange], PluginResult | Awaitable[PluginResult]]


class Plugin(Protocol):
    name: str


@dataclass(frozen=True, slots=True)
class PluginSlot:
    """A compiled plugin as one checkpoint sees it."""

    name: str
    method: PluginMethod
    is_async: bool
    enforced: bool  # False: report-only (record, count, log; never act)
    source: str  # "policies/api.yaml:1"
    fail_open: bool = False  # an internal error lets the request pass (chosen by the concern's policy)
    # The plugin runs at this checkpoint only for these request methods (``<method>_only_for``
    # on the plugin, e.g. CORS preflights); other requests skip it without a trace entry. An empty
    # set leaves the checkpoint out altogether (a hook the plugin's configuration does not need).
    only_for: frozenset[str] | None = None


def slots_for(plugin: object, *, enforced: bool, source: str) -> dict[str, PluginSlot]:
    """The checkpoint methods a plugin implements, keyed by checkpoint method name."""
    name = getattr(plugin, "name", None) or type(plugin).__name__.lower()
    fail_open = bool(getattr(plugin, "fail_open", False))
    out: dict[str, PluginSlot] = {}
    for method_name in CHECKPOINT_METHODS:
        method = getattr(plugin, method_name, None)
        if callable(method):
            only_for = getattr(plugin, f"{method_name}_only_for", None)
            if only_for is not None and not only_for:
                continue
            out[method_name] = PluginSlot(
                name,
                method,
                inspect.iscoroutinefunction(method),
                enforced,
                source,
                fail_open,
                frozenset(only_for) if only_for is not None else None,
            )
    return out


def load_plugin_class(ref: str) -> Callable[[Mapping[str, Any]], object]:
    """Resolve ``module:Class`` or an entry point name; ValueError says why not."""
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # any import-time failure of user code is a policy error
            raise ValueError(f"cannot import plugin module {module_name!r} ({type(e).__name__}: {e})") from None
        obj = getattr(module, attr, None)
        if obj is None:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == ref]
        if not matches:
            raise ValueError(f"no plugin named {ref!r} in entry point group {ENTRY_POINT_GROUP}")
        try:
            obj = matches[0].load()
        except Exception as e:
            raise ValueError(f"cannot load plugin {ref!r} ({type(e).__name__}: {e})") from None
    if not callable(obj):
        raise ValueError(f"plugin {ref!r} is not a class or factory")
    return obj  # type: ignore[no-any-return]


def instantiate(ref: str, config: Mapping[str, Any]) -> object:
    factory = load_plugin_class(ref)
    try:
        plugin = factory(config)
    except Exception as e:  # the plugin rejected its config: report it with the document's position
        raise ValueError(f"plugin {ref!r} rejected its config ({type(e).__name__}: {e})") from None
    if not any(callable(getattr(plugin, m, None)) for m in CHECKPOINT_METHODS):
        raise ValueError(f"plugin {ref!r} implements none of: {', '.join(CHECKPOINT_METHODS)}")
    return plugin
