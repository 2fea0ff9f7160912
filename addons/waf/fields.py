"""Request components for the WAF, extracted once per request and shared by every statement.

A ``RequestView`` wraps one request. Every component is parsed on first use and memoised (query
arguments, cookies, the body as form, multipart or JSON), and so is every (fields, transformations)
combination a statement asks for, so a hundred rules over the same headers decode them once.

``all_headers`` and ``cookies`` inspect what lies within AWS WAF's limits (by default the first
8 KB and at most 200 headers, or cookies); whether the request went beyond them is known to the statements,
which apply the field's ``oversize`` (``continue``, ``match``, ``no_match``) as for the body. The
request itself is always forwarded whole.

Each inspected value carries a *location* (``header:user-agent``, ``query_arg:id``,
``json:/items/0/name``, ``path_segment:2``) used by traces and by per-field exclusions.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from addons.waf import transforms
from addons.waf.models import DEFAULT_COOKIE_LIMIT, DEFAULT_HEADER_LIMIT, FieldToMatch

BODY_KINDS = frozenset({"body", "form", "json_body", "body_values"})
MAX_JSON_DEPTH = 64
MAX_JSON_ITEMS = 10_000
MAX_HEADERS = 200  # AWS WAF inspects the first 200 headers (all_headers) and 200 cookies (cookies)
MAX_COOKIES = 200
SEP = "\n"

Value = tuple[str, str]  # (location, text)
# The header-phase field kinds, each with the family whose sweep values hold all it can yield
SWEEP_FAMILY = {
    "method": "method", "uri_path": "uri_path", "query_string": "query_string", "path_segments": "path_segments",
    "query_arg": "all_query_args", "all_query_args": "all_query_args", "header": "all_headers",
    "all_headers": "all_headers", "cookie": "cookies", "cookies": "cookies",
}  # fmt: skip
SWEEP_ALL = frozenset(SWEEP_FAMILY.values())
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.){0,65536})"(\s*:)?')
_XML_TEXT = re.compile(r'>([^<]+)<|\s[\w:.-]+\s*=\s*"([^"]*)"')
_BOUNDARY = re.compile(r'boundary="?([^";,]+)"?', re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(r'(\w+\*?)="((?:[^"\\]|\\.)*)"|(\w+)=([^;\s]+)')


@dataclass(frozen=True, slots=True, eq=False)
class FieldSpec:
    """A compiled request component; hashable, so it keys the per-request memo."""

    kind: str
    name: str = ""
    scope: str = "values"
    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    include_paths: tuple[str, ...] = ()
    fallback: str = "none"
    oversize: str = "continue"

    @property
    def needs_body(self) -> bool:
        return self.kind in BODY_KINDS

    def key(self) -> tuple[Any, ...]:
        return (self.kind, self.name, self.scope, tuple(sorted(self.include)), tuple(sorted(self.exclude)),
                self.include_paths, self.fallback, self.oversize)  # fmt: skip

    def describe(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


def compile_field(f: FieldToMatch) -> FieldSpec:
    kind = f.kind
    opts: Any = getattr(f, kind)
    if kind in ("query_arg", "header"):
        return FieldSpec(kind, name=str(opts).lower())
    if kind == "cookie":
        return FieldSpec(kind, name=str(opts))
    if kind == "all_query_args":
        return FieldSpec(kind, scope=opts.scope, exclude=frozenset(n.lower() for n in opts.exclude))
    if kind in ("all_headers", "cookies"):
        return FieldSpec(
            kind,
            scope=opts.scope,
            include=frozenset(opts.include),
            exclude=frozenset(opts.exclude),
            oversize=opts.oversize,
        )
    if kind == "json_body":
        return FieldSpec(
            kind,
            scope=opts.scope,
            include_paths=tuple(opts.include_paths),
            fallback=opts.invalid_fallback,
            oversize=opts.oversize,
        )
    if kind in ("form", "body_values"):
        return FieldSpec(kind, scope=opts.scope, oversize=opts.oversize)
    if kind == "body":
        return FieldSpec(kind, oversize=opts.oversize)
    return FieldSpec(kind)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _parse_cookies(headers: Iterable[str]) -> list[tuple[str, str]]:
    got = []
    for header in headers:
        for part in header.split(";"):
            name, eq, value = part.strip().partition("=")
            if name or eq:
                got.append((name, value))
    return got


def _pointer_part(key: str) -> str:
    if "~" not in key and "/" not in key:
        return key
    return key.replace("~", "~0").replace("/", "~1")


class RequestView:
    """One request as the WAF sees it. Build it from mitmproxy's request or from parts (tests)."""

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | None,
        *,
        body_limit: int,
        peer: str = "",
        header_limit: int = DEFAULT_HEADER_LIMIT,
        cookie_limit: int = DEFAULT_COOKIE_LIMIT,
    ) -> None:
        self.method = method
        self.target_len = len(target)
        path, _, query = target.partition(b"?")
        self.raw_path = _text(path)
        self.raw_query = _text(query)
        self.header_fields = headers
        self.body = body
        self.body_limit = body_limit
        self.header_limit = header_limit  # set by the ACL (WebAcl.start) before anything is inspected
        self.cookie_limit = cookie_limit
        self.peer = peer
        self._memo: dict[Any, Any] = {}
        self._values: dict[FieldSpec, list[Value]] = {}
        self._raw: dict[int, list[Value]] = {}
        self._texts: dict[int, list[str]] = {}
        self._joined: dict[int, str] = {}
        self._joined_bytes: dict[int, bytes] = {}
        self.bank_hits: dict[int, dict[int, list[int]]] = {}

    @classmethod
    def from_request(cls, request: Any, *, body_limit: int, peer: str = "", with_body: bool) -> RequestView:
        body = request.raw_content if with_body else None
        return cls(request.method, request.data.path, request.headers.fields, body, body_limit=body_limit, peer=peer)

    # -- parsed components ------------------------------------------------------------------------

    def headers(self) -> list[tuple[str, str]]:
        """Every header field, (lower-case name, value) in order: what a single ``header`` field, the
        forwarded-IP settings and rate keys read, wherever the header is. What we followed: the
        reference (docs/reference/aws-apigateway.md, 8.3) gives the 8 KB / 200 limits for "headers"
        (the all-headers component) and requires oversize handling for body, JSON body, headers and
        cookies only, not for the single header (AWS's ``SingleHeader`` has no such setting); it does
        not say in as many words that a single header is exempt, we read it so."""
        got: list[tuple[str, str]] | None = self._memo.get("headers")
        if got is None:
            got = [(k.decode("latin-1").lower(), _text(v)) for k, v in self.header_fields]
            self._memo["headers"] = got
        return got

    def inspected_headers(self) -> tuple[list[tuple[str, str]], bool]:
        """(the headers ``all_headers`` inspects, whether the header section is beyond the limits).

        The limits are the first ``MAX_HEADERS`` fields and the first ``header_limit`` bytes, counted
        as an HTTP/1 header block: ``name: value\\r\\n`` per field (name + value + 4 bytes), the request
        line and the final empty line left out, every field (Cookie too) counting. The field the byte
        limit cuts through is inspected up to the limit if its whole name lies within (a cut name
        would not say which header it is, nor let exclusions and redaction recognise it)."""
        got: tuple[list[tuple[str, str]], bool] | None = self._memo.get("inspected_headers")
        if got is None:
            got = self._memo["inspected_headers"] = self._limit_headers()
        return got

    def _limit_headers(self) -> tuple[list[tuple[str, str]], bool]:
        every = self.headers()
        budget = self.header_limit
        fields = self.header_fields
        count = min(len(fields), MAX_HEADERS)
        for i in range(count):
            name, value = fields[i]
            cost = len(name) + len(value) + 4
            if cost > budget:
                inside = every[:i]
                room = budget - len(name) - 2
                if room >= 0:
                    inside.append((every[i][0], _text(value[:room])))
                return inside, True
            budget -= cost
        if count < len(fields):
            return every[:count], True
        return every, False

    def size_bound(self) -> int:
        """No header-phase value is longer in UTF-8 than this: three bytes (U+FFFD for an invalid
        byte) per byte of the method, target and header fields."""
        got: int | None = self._memo.get("size_bound")
        if got is None:
            raw = len(self.method) + self.target_len + sum(len(k) + len(v) for k, v in self.header_fields)
            got = self._memo["size_bound"] = 3 * raw
        return got

    def sweep_text(self, specs: tuple[FieldSpec, ...]) -> str:
        """The sweep's values (statements.sweep_specs) joined by newlines."""
        return SEP.join(self.sweep_parts(frozenset(SWEEP_FAMILY[spec.kind] for spec in specs)))

    def sweep_parts(self, kinds: frozenset[str]) -> list[str]:
        """The raw values of these header-phase families (``SWEEP_FAMILY`` values), without the
        per-value locations a field's values carry: method, path, query string, path segments,
        query argument names and values, header names and values, cookie names and values (the
        last two within the inspection limits). A superset of what any field of those families
        yields while the request is within the limits (``beyond_limits``)."""
        key = ("sweep", kinds)
        got: list[str] | None = self._memo.get(key)
        if got is not None:
            return got
        parts: list[str] = []
        if "method" in kinds:
            parts.append(self.method)
        if "uri_path" in kinds:
            parts.append(self.raw_path)
        if "query_string" in kinds:
            parts.append(self.raw_query)
        if "path_segments" in kinds:
            parts.extend(self.raw_path.split("/"))
        if "all_query_args" in kinds:
            for _, raw_name, value in self.query_args():
                parts.append(raw_name)
                parts.append(value)
        for kind, (items, _) in (("all_headers", self.inspected_headers()), ("cookies", self.inspected_cookies())):
            if kind in kinds:
                for name, value in items:
                    parts.append(name)
                    parts.append(value)
        self._memo[key] = parts
        return parts

    def beyond_limits(self) -> bool:
        """Headers or cookies beyond the inspection limits: some values are cut or left out of
        ``all_headers`` and ``cookies`` (the single ``header`` and ``cookie`` fields still see them)."""
        return self.inspected_headers()[1] or self.inspected_cookies()[1]

    @property
    def headers_oversized(self) -> bool:
        return self.inspected_headers()[1]

    def header(self, name: str) -> str | None:
        for k, v in self.headers():
            if k == name:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers() if k == name]

    def query_args(self) -> list[tuple[str, str, str]]:
        """(decoded lower-case name, raw name, raw value) in order; values stay percent-encoded."""
        got: list[tuple[str, str, str]] | None = self._memo.get("query")
        if got is None:
            got = []
            if self.raw_query:
                for part in self.raw_query.split("&"):
                    if part:
                        name, _, value = part.partition("=")
                        got.append((unquote_plus(name, errors="replace").lower(), name, value))
            self._memo["query"] = got
        return got

    def cookies(self) -> list[tuple[str, str]]:
        """Every cookie of every Cookie header, (name, value) in order: what a single ``cookie`` field
        and rate keys read. AWS has no single-cookie component (its cookies component with one
        included name is subject to the limits); ours names its cookie as a single header names its
        header, so like it, it is found wherever it is (``cookies: {include: [name]}`` has the limits)."""
        got: list[tuple[str, str]] | None = self._memo.get("cookies")
        if got is None:
            got = self._memo["cookies"] = _parse_cookies(self.header_values("cookie"))
        return got

    def inspected_cookies(self) -> tuple[list[tuple[str, str]], bool]:
        """(the cookies ``cookies`` inspects, whether they are beyond the limits).

        The limits are the first ``MAX_COOKIES`` cookies and the first ``cookie_limit`` bytes of the
        Cookie header values, several Cookie headers counting as one joined by ``; `` (as HTTP/2
        rejoins its cookie crumbs). The cookie the byte limit cuts through is inspected up to the
        limit if its name and ``=`` lie within."""
        got: tuple[list[tuple[str, str]], bool] | None = self._memo.get("inspected_cookies")
        if got is None:
            got = self._memo["inspected_cookies"] = self._limit_cookies()
        return got

    def _limit_cookies(self) -> tuple[list[tuple[str, str]], bool]:
        every = self.cookies()
        raw = [v for k, v in self.header_fields if k.lower() == b"cookie"]
        if sum(map(len, raw)) + 2 * (len(raw) - 1) <= self.cookie_limit:
            return (every, False) if len(every) <= MAX_COOKIES else (every[:MAX_COOKIES], True)
        joined = b"; ".join(raw)
        cut = joined[: self.cookie_limit]
        head, sep, last = cut.rpartition(b";")
        got = _parse_cookies([_text(head)]) if sep else []
        # the last cookie within: whole if the limit falls at its end, else only with its name and '='
        if b"=" in last or joined[self.cookie_limit : self.cookie_limit + 1] == b";":
            got.extend(_parse_cookies([_text(last)]))
        return got[:MAX_COOKIES], True

    @property
    def cookies_oversized(self) -> bool:
        return self.inspected_cookies()[1]

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").lower()

    @property
    def oversized(self) -> bool:
        return self.body is not None and len(self.body) > self.body_limit

    def body_text(self) -> str:
        got: str | None = self._memo.get("body")
        if got is None:
            got = _text(self.body[: self.body_limit]) if self.body else ""
            self._memo["body"] = got
        return got

    def json(self) -> tuple[bool, Any]:
        """(valid, parsed) of the inspected part of the body, parsed once."""
        got: tuple[bool, Any] | None = self._memo.get("json")
        if got is None:
            text = self.body_text()
            try:
                got = (True, json.loads(text)) if text.strip() else (False, None)
            except (ValueError, RecursionError):
                got = (False, None)
            self._memo["json"] = got
        return got

    def body_format(self) -> str:
        ct = self.content_type
        if "multipart/form-data" in ct:
            return "multipart"
        if "x-www-form-urlencoded" in ct:
            return "form"
        start = self.body_text().lstrip()[:1]
        if "json" in ct or start in ("{", "["):
            return "json"
        if "xml" in ct or (start == "<" and self.body_text().lstrip()[:5].lower() in ("<?xml", "<!doc")):
            return "xml"
        return "raw"

    # -- values of one component ------------------------------------------------------------------

    def values(self, spec: FieldSpec) -> list[Value]:
        got = self._values.get(spec)
        if got is None:
            fast = self._json_fast(spec)
            got = self._values[spec] = fast if fast is not None else list(self._extract(spec))
        return got

    def _json_fast(self, spec: FieldSpec) -> list[Value] | None:
        """Whole-document JSON values without a generator per item (bodies have hundreds)."""
        if spec.include_paths or self.body is None or (spec.oversize == "no_match" and self.oversized):
            return None
        if spec.kind != "json_body" and not (spec.kind == "body_values" and self.body_format() == "json"):
            return None
        valid, doc = self.json()
        if not valid:
            return None
        parsed: tuple[list[Value], list[Value]] | None = self._memo.get("json_parts")
        if parsed is None:
            parsed = self._memo["json_parts"] = _flatten_json(doc)
        keys, values = parsed
        return values if spec.scope == "values" else keys if spec.scope == "keys" else keys + values

    def _extract(self, spec: FieldSpec) -> Iterator[Value]:
        kind = spec.kind
        if spec.needs_body:
            if self.body is None or (spec.oversize == "no_match" and self.oversized):
                return
        if kind == "method":
            yield "method", self.method
        elif kind == "uri_path":
            yield "uri_path", self.raw_path
        elif kind == "path_segments":
            for i, seg in enumerate((s for s in self.raw_path.split("/") if s), 1):
                yield f"path_segment:{i}", seg
        elif kind == "query_string":
            if self.raw_query:
                yield "query_string", self.raw_query
        elif kind == "query_arg":
            for name, _, value in self.query_args():
                if name == spec.name:
                    yield f"query_arg:{name}", value
        elif kind == "all_query_args":
            for name, raw_name, value in self.query_args():
                if name in spec.exclude:
                    continue
                if spec.scope != "values":
                    yield f"query_key:{name}", raw_name
                if spec.scope != "keys":
                    yield f"query_arg:{name}", value
        elif kind == "header":
            for value in self.header_values(spec.name):
                yield f"header:{spec.name}", value
        elif kind == "all_headers":
            yield from _named(spec, "header", *self.inspected_headers())
        elif kind == "cookie":
            for name, value in self.cookies():
                if name == spec.name:
                    yield f"cookie:{name}", value
        elif kind == "cookies":
            yield from _named(spec, "cookie", *self.inspected_cookies())
        elif kind == "body":
            yield "body", self.body_text()
        elif kind == "form":
            yield from self._form(spec.scope)
        elif kind == "json_body":
            yield from self._json_values(spec)
        elif kind == "body_values":
            fmt = self.body_format()
            if fmt in ("form", "multipart"):
                yield from self._form(spec.scope)
            elif fmt == "json":
                yield from self._json_values(FieldSpec("json_body", scope=spec.scope, fallback="evaluate_as_string"))
            elif fmt == "xml":
                # the document for patterns, its text and attribute values for the detectors (which
                # read HTML, not XML: markup there is data)
                yield "xml", self.body_text()
                for m in _XML_TEXT.finditer(self.body_text()):
                    text = m.group(1) or m.group(2)
                    if text and text.strip():
                        yield "xml_text", html.unescape(text)
            elif self.body:
                yield "body", self.body_text()

    def _form(self, scope: str) -> Iterator[Value]:
        if "multipart/form-data" in self.content_type:
            for name, filename, value in self._multipart():
                if scope != "values":
                    yield f"form_key:{name}", name
                if filename is not None:
                    yield f"multipart_filename:{name}", filename
                elif scope != "keys":
                    yield f"form:{name}", value
            return
        if "x-www-form-urlencoded" not in self.content_type:
            return
        for part in self.body_text().split("&"):
            if not part:
                continue
            raw_name, _, value = part.partition("=")
            name = unquote_plus(raw_name, errors="replace")
            if scope != "values":
                yield f"form_key:{name}", raw_name
            if scope != "keys":
                yield f"form:{name}", value

    def _multipart(self) -> list[tuple[str, str | None, str]]:
        got: list[tuple[str, str | None, str]] | None = self._memo.get("multipart")
        if got is not None:
            return got
        got = []
        m = _BOUNDARY.search(self.header("content-type") or "")
        body = self.body[: self.body_limit] if self.body else b""
        if m:
            delimiter = b"--" + m.group(1).encode("latin-1", "replace")
            for chunk in body.split(delimiter)[1:]:
                if chunk.startswith(b"--"):
                    break
                head, sep, content = chunk.partition(b"\r\n\r\n")
                if not sep:
                    head, sep, content = chunk.partition(b"\n\n")
                params: dict[str, str] = {}
                for line in _text(head).splitlines():
                    if line.lower().startswith("content-disposition:"):
                        for pm in _DISPOSITION_PARAM.finditer(line):
                            key = (pm.group(1) or pm.group(3) or "").lower()
                            params[key] = pm.group(2) if pm.group(1) else pm.group(4)
                if content.endswith(b"\r\n"):
                    content = content[:-2]
                filename = params.get("filename", params.get("filename*"))
                got.append((params.get("name", ""), filename, _text(content) if filename is None else ""))
        self._memo["multipart"] = got
        return got

    def _json_values(self, spec: FieldSpec) -> Iterator[Value]:
        valid, doc = self.json()
        if not valid:
            if spec.fallback == "evaluate_as_string":
                if self.body:
                    yield "body", self.body_text()
            elif spec.fallback == "none":
                yield from self._lenient_json(spec.scope)
            return  # match / no_match are decided by the statement
        parsed: tuple[list[Value], list[Value]] | None = self._memo.get("json_parts")
        if parsed is None:
            parsed = self._memo["json_parts"] = _flatten_json(doc)
        keys, values = parsed
        if not spec.include_paths:
            if spec.scope == "values":
                yield from values
            elif spec.scope == "keys":
                yield from keys
            else:
                yield from keys
                yield from values
            return
        paths = spec.include_paths
        for location, text in (keys if spec.scope != "values" else []) + (values if spec.scope != "keys" else []):
            pointer = location.partition(":")[2]
            if any(pointer == p or pointer.startswith(p + "/") or p == "" for p in paths):
                yield location, text

    def _lenient_json(self, scope: str) -> Iterator[Value]:
        """Invalid or truncated JSON: the strings found in it (AWS WAF evaluates up to the error)."""
        for m in _JSON_STRING.finditer(self.body_text()):
            try:
                text = json.loads(f'"{m.group(1)}"')
            except ValueError:
                text = m.group(1)
            is_key = m.group(2) is not None
            if is_key and scope != "values":
                yield "json_key:", text
            elif not is_key and scope != "keys":
                yield "json:", text

    # -- transformed values, memoised per pipe (fields + transformations, interned at load) --------

    def raw(self, pipe: Pipe) -> list[Value]:
        got = self._raw.get(pipe.source)
        if got is None:
            if len(pipe.fields) == 1:
                got = self.values(pipe.fields[0])
            else:
                got = [v for spec in pipe.fields for v in self.values(spec)]
            self._raw[pipe.source] = got
        return got

    def owners(self, pipe: Pipe) -> list[FieldSpec]:
        """The field spec each value of ``raw(pipe)`` came from."""
        return [spec for spec in pipe.fields for _ in self.values(spec)]

    def texts(self, pipe: Pipe) -> list[str]:
        """Each value of the pipe's fields after its transformations (parallel to ``raw``)."""
        got = self._texts.get(pipe.uid)
        if got is None:
            if pipe.parent is None:
                got = [text for _, text in self.raw(pipe)]
            else:
                fn = pipe.fn
                got = [fn(t) for t in self.texts(pipe.parent)]
            self._texts[pipe.uid] = got
        return got

    def joined(self, pipe: Pipe) -> bytes:
        """All values joined by newlines, the (local) transformations applied once to the whole."""
        got = self._joined_bytes.get(pipe.uid)
        if got is None:
            got = self._joined_text(pipe).encode("utf-8", "replace")
            self._joined_bytes[pipe.uid] = got
        return got

    def _joined_text(self, pipe: Pipe) -> str:
        got = self._joined.get(pipe.uid)
        if got is None:
            if pipe.sweep:
                got = self.sweep_text(pipe.fields)
            elif pipe.parent is None:
                got = SEP.join([text for _, text in self.raw(pipe)])
            else:
                got = pipe.fn(self._joined_text(pipe.parent))
            self._joined[pipe.uid] = got
        return got

    def memo(self) -> dict[Any, Any]:
        """Scratch space for statements (detector results, bank hits), per request."""
        return self._memo


def _named(spec: FieldSpec, what: str, items: list[tuple[str, str]], over: bool) -> Iterator[Value]:
    """Headers or cookies within the inspection limits, filtered by the spec's include/exclude lists:
    ``<what>_key:<name>`` for names, ``<what>:<name>`` for values (as the spec's scope says)."""
    if over and spec.oversize == "no_match":
        return
    for name, value in items:
        if (spec.include and name not in spec.include) or name in spec.exclude:
            continue
        if spec.scope != "values":
            yield f"{what}_key:{name}", name
        if spec.scope != "keys":
            yield f"{what}:{name}", value


class Pipe:
    """Fields plus a transformation chain, interned at load so per-request memo keys are ints."""

    __slots__ = ("chain", "fields", "fn", "parent", "source", "sweep", "uid")

    def __init__(
        self, uid: int, source: int, fields: tuple[FieldSpec, ...], chain: tuple[str, ...], parent: Pipe | None
    ) -> None:
        self.uid = uid
        self.source = source
        self.fields = fields
        self.chain = chain
        self.parent = parent
        self.fn = transforms.TRANSFORMS[chain[-1]] if chain else transforms.none
        self.sweep = False  # the root of the banks' sweep (joined text only, see sweep_text)

    @property
    def needs_body(self) -> bool:
        return any(f.needs_body for f in self.fields)

    def transform(self, text: str) -> str:
        """One value through the chain (what ``RequestView.texts`` gives for each value)."""
        return transforms.apply(self.chain, text)


class Pipes:
    """Interning of field specs, field tuples and pipes."""

    def __init__(self) -> None:
        self._pipes: dict[tuple[tuple[FieldSpec, ...], tuple[str, ...]], Pipe] = {}
        self._sources: dict[tuple[FieldSpec, ...], int] = {}
        self._specs: dict[tuple[Any, ...], FieldSpec] = {}

    def spec(self, spec: FieldSpec) -> FieldSpec:
        """The one instance of equal specs (they key per-request memos by identity)."""
        return self._specs.setdefault(spec.key(), spec)

    def get(self, fields: tuple[FieldSpec, ...], chain: tuple[str, ...]) -> Pipe:
        # the same fields in another order (or twice) make the same pipe
        canonical = {spec.key(): self.spec(spec) for spec in fields}
        fields = tuple(canonical[k] for k in sorted(canonical, key=repr))
        chain = tuple(t for t in chain if t != "none")
        key = (fields, chain)
        pipe = self._pipes.get(key)
        if pipe is None:
            parent = self.get(fields, chain[:-1]) if chain else None
            source = self._sources.setdefault(fields, len(self._sources) + 1)
            pipe = self._pipes[key] = Pipe(len(self._pipes) + 1, source, fields, chain, parent)
        return pipe


def _flatten_json(doc: Any) -> tuple[list[Value], list[Value]]:
    """(keys, scalar values) of a parsed document with their JSON Pointer locations, bounded in
    depth and size; each key as ``json_key:/a/b`` (its own path), each value as ``json:/a/b``."""
    keys: list[Value] = []
    values: list[Value] = []
    budget = [MAX_JSON_ITEMS]

    def walk(node: Any, pointer: str, depth: int) -> None:
        # json.loads only makes these exact types, so type() is enough (and quicker than isinstance)
        if budget[0] <= 0 or depth > MAX_JSON_DEPTH:
            return
        items: Any = node.items() if type(node) is dict else enumerate(node)
        for k, v in items:
            if type(k) is str:
                child = f"{pointer}/{k if '~' not in k and '/' not in k else _pointer_part(k)}"
                keys.append(("json_key:" + child, k))
            else:
                child = f"{pointer}/{k}"
            t = type(v)
            if t is str:
                values.append(("json:" + child, v))
            elif t is dict or t is list:
                walk(v, child, depth + 1)
            elif t is bool:
                values.append(("json:" + child, "true" if v else "false"))
            elif t is int or t is float:
                values.append(("json:" + child, str(v)))
            budget[0] -= 1

    t = type(doc)
    if t is dict or t is list:
        walk(doc, "", 0)
    elif t is str:
        values.append(("json:", doc))
    elif t is not type(None):
        values.append(("json:", str(doc).lower() if t is bool else str(doc)))
    return keys, values
