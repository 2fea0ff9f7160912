"""Managed rule groups written and maintained by the sidegate team, shipped as Python data.

Each group module has ``RULES``: plain mappings validated with the same models as policy rules
(so a broken pattern fails the import, and every rule has an id such as ``waf/sqli-001`` and a
one-line ``rationale``). Every rule also gets the label ``managed:<group>:<id suffix>``, so later
rules can react to it (``label_match`` with scope namespace ``managed:sqli``).

The groups inspect every header (not only User-Agent, Referer and Cookie), every URL path
segment, query arguments, cookies and the body (form, multipart, JSON or raw), after decoding.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from addons.waf.models import MANAGED_GROUPS, WafRule


@functools.cache
def group_rules(group: str) -> tuple[WafRule, ...]:
    if group not in MANAGED_GROUPS:
        raise ValueError(f"unknown managed group {group!r}")
    module = importlib.import_module(f"addons.waf.managed.{group}")
    rules: list[dict[str, Any]] = module.RULES
    out = []
    for data in rules:
        rule = dict(data)
        slug = str(rule["id"]).rsplit("/", 1)[-1]
        rule["labels"] = [*rule.get("labels", []), f"managed:{group}:{slug}"]
        out.append(WafRule.model_validate(rule))
    ids = [r.id for r in out]
    if len(set(ids)) != len(ids) or len({r.priority for r in out}) != len(out):
        raise ValueError(f"managed group {group}: rule ids and priorities must be unique")
    return tuple(out)


def group_rule_ids(group: str) -> list[str]:
    return [r.id for r in group_rules(group)]


def all_groups_policy(priority_start: int = 100, step: int = 100) -> list[dict[str, Any]]:
    """Rule entries enabling every managed group, in the recommended order."""
    return [
        {"id": f"managed-{g}", "priority": priority_start + i * step, "managed_group": g}
        for i, g in enumerate(MANAGED_GROUPS)
    ]
