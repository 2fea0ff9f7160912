"""Load a policy directory into one immutable PolicySet, or fail with every error found.

YAML is read with ruamel.yaml's round-trip loader so that every mapping key, value and sequence
item knows its position; pydantic validates each document against the model its ``kind`` names,
and each error's field path is mapped back to ``file:line:column``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from addons.policy.errors import PolicyError, PolicyIssue
from addons.policy.models import KINDS
from addons.policy.types import POLICY_ROOT, PolicyModel

Position = tuple[int, int]  # 1-based line, column
PositionMap = dict[tuple[str | int, ...], Position]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Document:
    """One validated policy document and where it came from."""

    __slots__ = ("line", "model", "path", "positions")

    def __init__(self, path: str, model: PolicyModel, positions: PositionMap) -> None:
        self.path = path
        self.model = model
        self.positions = positions
        self.line = positions.get((), (1, 1))[0]

    @property
    def source(self) -> str:
        return f"{self.path}:{self.line}"

    def source_of(self, *field: str | int) -> str:
        """``file:line`` of a field inside this document (nearest enclosing position)."""
        path = tuple(field)
        while path and path not in self.positions:
            path = path[:-1]
        return f"{self.path}:{self.positions.get(path, (self.line, 1))[0]}"


def policy_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def display_path(path: Path, directory: Path) -> str:
    """Paths in messages read as the user wrote them: ``policies/api.yaml``."""
    try:
        return str(path.relative_to(directory.parent)) if directory.parent != Path() else str(path)
    except ValueError:
        return str(path)


def load_documents(directory: Path) -> list[Document]:
    """Validate every YAML file under ``directory``; raise PolicyError listing all problems."""
    directory = Path(directory)
    issues: list[PolicyIssue] = []
    documents: list[Document] = []
    if not directory.is_dir():
        raise PolicyError([PolicyIssue(str(directory), None, None, "", "policy directory does not exist")])
    token = POLICY_ROOT.set(directory.resolve().parent)
    try:
        for path in policy_files(directory):
            shown = display_path(path, directory)
            doc = _load_file(path, shown, issues)
            if doc is not None:
                documents.append(doc)
    finally:
        POLICY_ROOT.reset(token)
    if issues:
        raise PolicyError(issues)
    return documents


def _load_file(path: Path, shown: str, issues: list[PolicyIssue]) -> Document | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        issues.append(PolicyIssue(shown, None, None, "", f"cannot read file ({e})"))
        return None
    yaml = YAML(typ="rt")
    try:
        loaded = list(yaml.load_all(io.StringIO(text)))
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = (e.problem or e.context or "invalid YAML").strip()
        if "duplicate key" in problem or "found duplicate key" in str(e):
            key = re.search(r'duplicate key "([^"]*)"', str(e))
            problem = f"duplicate key {key.group(1)!r}" if key else "duplicate key"
        issues.append(PolicyIssue(shown, line, col, "", f"YAML syntax error: {problem}"))
        return None
    except YAMLError as e:
        issues.append(PolicyIssue(shown, None, None, "", f"YAML syntax error: {e}"))
        return None
    docs = [d for d in loaded if d is not None]
    if not docs:
        return None  # an empty file (or comments only) declares nothing
    if len(docs) > 1:
        line = _doc_line(docs[1])
        issues.append(PolicyIssue(shown, line, 1, "", f"found {len(docs)} YAML documents; put one document per file"))
        return None
    raw = docs[0]
    positions = dict(_positions(raw, ()))
    if not isinstance(raw, CommentedMap):
        issues.append(PolicyIssue(shown, _doc_line(raw), 1, "", "a policy document must be a mapping with a 'kind'"))
        return None
    kind = raw.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        line, col = positions.get(("kind",), positions.get((), (1, 1)))
        what = "missing required key" if kind is None else f"unknown kind {kind!r}"
        issues.append(PolicyIssue(shown, line, col, "kind", f"{what}; expected one of: {', '.join(KINDS)}"))
        return None
    try:
        validated = model.model_validate(_plain(raw))
    except ValidationError as e:
        seen: set[tuple[Any, ...]] = set()
        for err in _prune_union_noise(e.errors(include_url=False)):
            loc = _clean_loc(err)
            signature = (loc, err["type"], str(err["msg"]))
            if signature not in seen:
                seen.add(signature)
                issues.append(_issue_from(err, shown, positions))
        return None
    return Document(shown, validated, positions)


def _structural(err: ErrorDetails) -> bool:
    return err["type"] in ("extra_forbidden", "missing") or err["type"].endswith("_type")


def _prune_union_noise(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """A union (plain value or secret reference, origin or ``{regex: ...}``) reports errors for
    every branch. Keep the branch that got furthest: the one with the fewest structural errors
    (wrong type, unknown or missing keys), so the user reads about the value they meant to write."""
    kept: list[ErrorDetails] = []
    groups: dict[tuple[Any, ...], dict[str, list[ErrorDetails]]] = {}
    for err in errors:
        loc = err["loc"]
        tag_at = next((i for i, p in enumerate(loc) if isinstance(p, str) and _is_union_tag(p) and p != "[key]"), None)
        if tag_at is None:
            kept.append(err)
        else:
            groups.setdefault(tuple(loc[:tag_at]), {}).setdefault(str(loc[tag_at]), []).append(err)
    for branches in groups.values():
        best: list[ErrorDetails] = min(branches.values(), key=lambda errs: (sum(map(_structural, errs)), len(errs)))
        kept.extend(best)
    return kept


def _doc_line(node: Any) -> int:
    lc = getattr(node, "lc", None)
    return (lc.line + 1) if lc is not None and lc.line is not None else 1


def _positions(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Position]]:
    if path == ():
        yield (), (_doc_line(node), 1)
    if isinstance(node, CommentedMap):
        for key in node:
            try:
                kl, kc = node.lc.key(key)
            except (KeyError, TypeError):
                continue
            yield (*path, str(key)), (kl + 1, kc + 1)
            if not isinstance(node[key], CommentedMap | CommentedSeq):
                # A scalar's error points at the value; a container's at its key.
                try:
                    vl, vc = node.lc.value(key)
                    yield (*path, str(key), "<value>"), (vl + 1, vc + 1)
                except (KeyError, TypeError):
                    pass
            yield from _positions(node[key], (*path, str(key)))
    elif isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            try:
                il, ic = node.lc.item(i)
                yield (*path, i), (il + 1, ic + 1)
            except (KeyError, TypeError, IndexError):
                pass
            yield from _positions(item, (*path, i))


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers -> plain dicts/lists/scalars for validation."""
    if isinstance(node, CommentedMap):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _field_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


_TYPE_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "dict": "a mapping", "list": "a list", "NoneType": "nothing"}  # fmt: skip


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing required key"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"expected one of: {expected.replace(' or ', ', ')} (got {got!r})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping (got {_TYPE_NAMES.get(type(got).__name__, type(got).__name__)})"
    if kind == "list_type":
        return f"expected a list (got {_TYPE_NAMES.get(type(got).__name__, type(got).__name__)})"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{str(err['msg']).lower()} (got {got!r})"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{str(err['msg']).lower().replace('input should be', 'must be')} (got {got!r})"
    if kind == "too_short":
        return f"must have at least {err.get('ctx', {}).get('min_length')} item(s)"
    if kind == "too_long":
        return f"must have at most {err.get('ctx', {}).get('max_length')} item(s)"
    if kind == "string_pattern_mismatch":
        return f"invalid value {got!r}: must match {err.get('ctx', {}).get('pattern')}"
    return f"{err['msg']} (got {got!r})" if isinstance(got, str | int | float) else str(err["msg"])


def _clean_loc(err: ErrorDetails) -> tuple[str | int, ...]:
    """Drop pydantic's union-branch tags (e.g. "str", "function-after[...]") from the location."""
    return tuple(p for p in err["loc"] if isinstance(p, int) or not _is_union_tag(p))


def _issue_from(err: ErrorDetails, shown: str, positions: PositionMap) -> PolicyIssue:
    loc = _clean_loc(err)
    key_path = loc
    on_key = "[key]" in err["loc"]
    if err["type"] not in ("extra_forbidden", "missing") and not on_key:
        value_pos = positions.get((*loc, "<value>"))
        if value_pos:
            return PolicyIssue(shown, *value_pos, _field_path(loc), _message(err))
    while key_path and key_path not in positions:
        key_path = key_path[:-1]
    line, col = positions.get(key_path, (1, 1))
    return PolicyIssue(shown, line, col, _field_path(loc), _message(err))


def _is_union_tag(part: str) -> bool:
    """pydantic names the branch of a union in the location: a type, a validator or a model name."""
    return (
        part in ("str", "int", "float", "bool", "dict", "list", "[key]")
        or part in _model_names()
        or part.startswith(("function-", "constrained-", "lax-", "strict-", "json-or-python", "is-instance["))
    )


def _model_names() -> frozenset[str]:
    def walk(cls: type[PolicyModel]) -> Iterator[str]:
        for sub in cls.__subclasses__():
            yield sub.__name__
            yield from walk(sub)

    return frozenset(walk(PolicyModel))
