"""CORS as the Fetch standard defines it. Checkpoints: method request (preflights), method response
(every answer). Policy: ``kind: Cors`` (API-wide, with per-route overrides).

- Preflights (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) are answered by
  the gateway and never forwarded: 204 with the ``Access-Control-Allow-*`` headers when origin,
  method, headers (and Private Network Access) pass; otherwise 403 without any of them, the
  trace naming the failed check.
- Every other answer from an allowed origin gets ``Access-Control-Allow-Origin`` (and credentials,
  expose headers), the backend's own CORS headers replaced (one owner), gateway errors included:
  a browser then shows the real 401/403/429/5xx instead of a CORS failure.
- ``Vary: Origin`` is merged into every answer whose headers depend on the origin.
- Report mode: the decision is traced and counted, headers are emitted as if allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from addons.decision import Answer, Exchange, Flag, Reject
from addons.policy.models import CORS_SAFELISTED_METHODS, CorsPolicy, CorsSettings, normalise_origin

ACAO = "access-control-allow-origin"
ACAC = "access-control-allow-credentials"
ACAM = "access-control-allow-methods"
ACAH = "access-control-allow-headers"
ACEH = "access-control-expose-headers"
ACMA = "access-control-max-age"
ACAPN = "access-control-allow-private-network"
OWNED = (ACAO, ACAC, ACAM, ACAH, ACEH, ACMA, ACAPN)
_OWNED_BYTES = frozenset(name.encode() for name in OWNED)
# Fetch: Authorization is never covered by a wildcard in Access-Control-Allow-Headers.
NON_WILDCARD_HEADERS = frozenset({"authorization"})
PREFLIGHT_VARY = ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")
PREFLIGHT_MARK = "cors_preflight"
VERDICT_CACHE_SIZE = 4096  # (route, origin) pairs remembered; the memory starts over when full
_Verdict = tuple[bool, tuple[str, ...], tuple[tuple[bytes, bytes], ...]]  # allowed, vary names, headers


@dataclass(frozen=True, slots=True)
class CompiledCors:
    """One set of CORS settings (API-wide or a route's), ready for request-time lookups."""

    exact: frozenset[str]
    wildcards: tuple[tuple[str, str, str], ...]  # (scheme, ".suffix", ":port" or "")
    regexes: tuple[Any, ...]  # compiled RE2, full match
    any_origin: bool
    allow_null: bool
    methods: frozenset[str]
    any_method: bool  # "*" and no credentials
    headers: frozenset[str]
    any_header: bool  # "*" and no credentials
    methods_value: str
    headers_value: str
    expose_value: str
    credentials: bool
    max_age: str | None
    private_network: bool

    @property
    def origin_independent(self) -> bool:
        """``*`` for everyone: the answer does not vary with Origin."""
        return self.any_origin and not self.credentials

    def origin_allowed(self, origin: str) -> bool:
        if origin == "null":
            return self.allow_null
        if self.any_origin:
            return normalise_origin(origin) is not None
        norm = normalise_origin(origin)
        if norm is None:
            return False
        if norm in self.exact:
            return True
        scheme, _, hostport = norm.partition("://")
        host, _, port = hostport.partition(":") if not hostport.startswith("[") else (hostport, "", "")
        port_part = f":{port}" if port else ""
        for w_scheme, suffix, w_port in self.wildcards:
            # one or more labels before the suffix: "a.example.com", "a.b.example.com", never "example.com"
            if scheme == w_scheme and port_part == w_port and host.endswith(suffix) and len(host) > len(suffix):
                return True
        return any(r.fullmatch(norm) or r.fullmatch(origin) for r in self.regexes)

    def allow_origin_value(self, origin: str) -> str:
        return "*" if self.origin_independent else origin


def compile_settings(base: CorsPolicy, override: CorsSettings | None = None) -> CompiledCors:
    def pick(name: str) -> Any:
        value = getattr(override, name, None) if override is not None else None
        return value if value is not None else getattr(base, name)

    credentials: bool = pick("allow_credentials")
    exact: set[str] = set()
    wildcards: list[tuple[str, str, str]] = []
    regexes: list[Any] = []
    any_origin = allow_null = False
    for entry in pick("allow_origins"):
        if not isinstance(entry, str):
            regexes.append(entry.regex)
        elif entry == "*":
            any_origin = True
        elif entry == "null":
            allow_null = True
        elif "://*." in entry:
            scheme, _, rest = entry.partition("://*.")
            host, _, port = rest.partition(":")
            default = {"http": "80", "https": "443"}[scheme]
            wildcards.append((scheme, "." + host, f":{int(port)}" if port and port != default else ""))
        else:
            norm = normalise_origin(entry)
            assert norm is not None  # validated at load
            exact.add(norm)
    methods = [m.upper() for m in pick("allow_methods")]
    headers = [h.lower() for h in pick("allow_headers")]
    expose = list(pick("expose_headers"))
    max_age = pick("max_age")
    return CompiledCors(
        exact=frozenset(exact),
        wildcards=tuple(wildcards),
        regexes=tuple(regexes),
        any_origin=any_origin,
        allow_null=allow_null,
        methods=frozenset(m for m in methods if m != "*"),
        any_method="*" in methods and not credentials,
        headers=frozenset(h for h in headers if h != "*"),
        any_header="*" in headers and not credentials,
        methods_value=", ".join(methods),
        headers_value=", ".join(headers),
        expose_value=", ".join(expose),
        credentials=credentials,
        max_age=str(int(max_age)) if max_age is not None else None,
        private_network=pick("allow_private_network"),
    )


def rebuild_headers(
    headers: http.Headers, vary: tuple[str, ...], add: tuple[tuple[bytes, bytes], ...] = (), *, strip: bool = True
) -> None:
    """Own the CORS headers of an answer in one pass over its fields (one rebuild, not one per name).

    Drops every ``Access-Control-Allow-*``/``-Expose``/``-Max-Age`` header already there (the
    backend's CORS headers never reach the client), merges ``vary`` names into ``Vary`` without
    replacing what is there (``Vary: Accept`` stays; ``Vary: *`` is left alone), and appends ``add``.
    ``strip=False`` keeps the CORS headers (the gateway's own preflight answer).
    """
    kept: list[tuple[bytes, bytes]] = []
    existing: list[str] = []
    vary_at = -1  # where the first Vary field is in ``kept``
    for field in headers.fields:
        name = field[0].lower()
        if strip and name in _OWNED_BYTES:
            continue
        if name == b"vary":
            if vary_at < 0:
                vary_at = len(kept)
            existing.extend(v.strip() for v in field[1].decode("latin-1").split(",") if v.strip())
        kept.append(field)
    if vary and "*" not in existing:
        lower = {v.lower() for v in existing}
        added = [n for n in vary if n.lower() not in lower]
        if added:  # one Vary field with everything, where the first one was (or at the end)
            value = (b"vary", ", ".join(existing + added).encode("latin-1"))
            if vary_at < 0:
                kept.append(value)
            else:
                kept = kept[:vary_at] + [value] + [f for f in kept[vary_at:] if f[0].lower() != b"vary"]
    kept.extend(add)
    headers.fields = tuple(kept)


class Cors:
    name = "cors"
    method_request_only_for = frozenset({"OPTIONS"})  # only preflights need the request side

    def __init__(self, policy: CorsPolicy, source: str, *, enforced: bool) -> None:
        self.source = source
        self.enforced = enforced
        self._base = compile_settings(policy)
        self._routes = {key: compile_settings(policy, override) for key, override in policy.routes.items()}
        self._verdicts: dict[tuple[str | None, str | None], _Verdict] = {}

    def _settings(self, route_key: str | None) -> CompiledCors:
        return self._routes.get(route_key, self._base) if route_key is not None else self._base

    # -- method request: preflights -------------------------------------------------------------

    def method_request(self, ex: Exchange) -> Answer | Reject | None:
        req = ex.request
        if req.method != "OPTIONS":
            return None
        origin = req.headers.get("origin")
        requested_method = req.headers.get("access-control-request-method")
        if origin is None or requested_method is None:
            return None  # a plain OPTIONS request: routed like any other
        ex.vars[PREFLIGHT_MARK] = True
        route = ex.route_for(requested_method.strip().upper())
        settings = self._settings(route.key if route else None)
        requested_headers = [
            h.strip().lower() for h in req.headers.get("access-control-request-headers", "").split(",") if h.strip()
        ]
        private = req.headers.get("access-control-request-private-network", "").lower() == "true"
        failed = self._preflight_failure(settings, origin, requested_method.strip().upper(), requested_headers, private)
        answer = self._preflight_answer(settings, origin, private)
        if failed is None:
            return answer
        return Reject("ACCESS_DENIED", reason=failed, source=self.source, report_answer=answer)

    @staticmethod
    def _preflight_failure(s: CompiledCors, origin: str, method: str, headers: list[str], private: bool) -> str | None:
        if not s.origin_allowed(origin):
            return "cors_origin_denied"
        if not (method in s.methods or method in CORS_SAFELISTED_METHODS or s.any_method):
            return "cors_method_denied"
        for h in headers:
            if h in s.headers:
                continue
            if s.any_header and h not in NON_WILDCARD_HEADERS:
                continue
            return "cors_header_denied"
        if private and not s.private_network:
            return "cors_private_network_denied"
        return None

    @staticmethod
    def _preflight_answer(s: CompiledCors, origin: str, private: bool) -> Answer:
        headers = [(ACAO, s.allow_origin_value(origin))]
        if s.credentials:
            headers.append((ACAC, "true"))
        if s.methods_value:
            headers.append((ACAM, s.methods_value))
        if s.headers_value:
            headers.append((ACAH, s.headers_value))
        if s.max_age is not None:
            headers.append((ACMA, s.max_age))
        if private and s.private_network:
            headers.append((ACAPN, "true"))
        headers.append(("vary", ", ".join(PREFLIGHT_VARY)))
        return Answer(204, "cors_preflight", tuple(headers))

    # -- method response: every answer ----------------------------------------------------------

    def method_response(self, ex: Exchange) -> Flag | None:
        response = ex.response
        if response is None:
            return None
        if ex.vars.get(PREFLIGHT_MARK):
            if ex.answered_by is None:
                # A refused preflight gets none of the CORS headers; an answered one keeps its own.
                rebuild_headers(response.headers, PREFLIGHT_VARY)
            else:
                rebuild_headers(response.headers, PREFLIGHT_VARY, strip=False)
            return None
        route = ex.route
        route_key = route.key if route else None
        origin = ex.request.headers.get("origin")
        verdict = self._verdicts.get((route_key, origin))
        if verdict is None:
            verdict = self._verdict(route_key, origin)
        allowed, vary, decoration = verdict
        rebuild_headers(response.headers, vary, decoration)
        return None if allowed else Flag("cors_origin_denied")

    def _verdict(self, route_key: str | None, origin: str | None) -> _Verdict:
        """Whether an origin is allowed on a route and the headers that says, remembered per pair
        (browsers send a handful of distinct origins; the memory is bounded all the same)."""
        settings = self._settings(route_key)
        vary = () if settings.origin_independent else ("Origin",)
        if origin is None:
            verdict: _Verdict = (True, vary, ())
        else:
            allowed = settings.origin_allowed(origin)
            decorated = allowed or not self.enforced  # report mode: decorated as if allowed
            verdict = (allowed, vary, self._decoration(settings, origin) if decorated else ())
        if len(self._verdicts) >= VERDICT_CACHE_SIZE:
            self._verdicts.clear()
        self._verdicts[(route_key, origin)] = verdict
        return verdict

    @staticmethod
    def _decoration(s: CompiledCors, origin: str) -> tuple[tuple[bytes, bytes], ...]:
        headers = [(ACAO, s.allow_origin_value(origin))]
        if s.credentials:
            headers.append((ACAC, "true"))
        if s.expose_value:
            headers.append((ACEH, s.expose_value))
        return tuple((name.encode(), value.encode("utf-8", "surrogateescape")) for name, value in headers)
