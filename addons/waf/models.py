"""Policy models of the WAF (``kind: WebAcl``), after AWS WAF's rule model.

A web ACL is a list of rules in priority order. A rule is either a statement with an action
(``allow``, ``block`` with an optional custom response, ``count``) and labels, or a reference to
one of the managed rule groups shipped in ``addons/waf/managed/``. Regexes are RE2 (linear time);
a pattern RE2 cannot compile is a load error with ``file:line:column``. ``rate_based`` counters live
in memory or, with the Throttle's store settings (``store``, ``password``, ``store_timeout``,
``on_store_error``, ``replicas``), in Redis, shared by replicas.

```yaml
kind: WebAcl
default_action: allow
body_inspection_limit: 16KB
rules:
  - {id: managed-sqli, priority: 10, managed_group: sqli}
  - id: block-admin-from-outside
    priority: 20
    action: block
    statement:
      and:
        - byte_match: {field: uri_path, match: starts_with, value: /admin}
        - not: {ip_set: {addresses: [10.0.0.0/8]}}
exclusions:
  - {routes: ["POST /articles"], rules: ["group:xss"], fields: ["json:/body"], action: count}
```
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from addons.policy.types import Duration, Mode, PolicyModel, Regex, Secret, Size
from addons.routing import parse_route_key

# Small field types of our own rather than addons.policy.models's, so that module can import this
# one to register the kind (KINDS["WebAcl"]) without an import cycle.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"invalid header name {value!r}")
    return value.lower()


def _route_key(value: str) -> str:
    parse_route_key(value)
    return value


def _cidr(value: Any) -> Any:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ValueError(f"invalid IP network {value!r}") from None


HeaderName = Annotated[str, AfterValidator(_header_name)]
RouteKeyText = Annotated[str, AfterValidator(_route_key)]
Cidr = Annotated[Any, BeforeValidator(_cidr), WithJsonSchema({"type": "string", "description": "IPv4/IPv6 CIDR"})]

MANAGED_GROUPS = ("core", "sqli", "xss", "lfi", "rce", "ssrf", "known_bad_inputs", "nosql_and_prototype", "xxe")
ManagedGroupName = Literal[
    "core", "sqli", "xss", "lfi", "rce", "ssrf", "known_bad_inputs", "nosql_and_prototype", "xxe"
]
TransformName = Literal[
    "none", "url_decode", "url_decode_uni", "html_entity_decode", "js_decode", "css_decode",
    "escape_seq_decode", "base64_decode", "base64_decode_ext", "hex_decode", "sql_hex_decode",
    "lowercase", "compress_whitespace", "cmd_line", "remove_nulls", "replace_nulls",
    "replace_comments", "normalize_path", "normalize_path_win", "utf8_to_unicode",
]  # fmt: skip
Scope = Literal["keys", "values", "all"]
Oversize = Literal["continue", "match", "no_match"]
# AWS WAF's list of statuses a custom block response may use.
BLOCK_STATUSES = frozenset(
    {200, 201, 202, 204, 206, 300, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 411,
     412, 413, 414, 415, 416, 421, 429, 500, 501, 502, 503, 504, 505}
)  # fmt: skip
DEFAULT_BODY_LIMIT = 16 * 1024  # API Gateway's default since 2024 (KB_16)
MAX_BODY_LIMIT = 8 * 1024 * 1024
# AWS WAF inspects the first 8 KB of the request headers and the first 8 KB of the cookies (and at
# most 200 of either: ``fields.MAX_HEADERS``, ``fields.MAX_COOKIES``). AWS fixes these; like the body
# limit they are settings of the document here, 8 KB by default.
DEFAULT_HEADER_LIMIT = 8 * 1024
DEFAULT_COOKIE_LIMIT = 8 * 1024
MAX_HEADER_LIMIT = 256 * 1024
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./:-]{0,127}$")
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,128}(?::[A-Za-z0-9_.-]{1,128}){0,5}$")
_JSON_POINTER = re.compile(r"^(/([^~/]|~[01])*)*$")
_AGG_KEY = re.compile(
    r"^(ip|forwarded_ip|method|uri_path|query_string|constant|"
    r"(header|cookie|query_arg|label_namespace):[!#$%&'*+.^_`|~0-9A-Za-z:-]+)$"
)
_FIELD_REF = re.compile(
    r"^(method|uri_path|query_string|body|headers|cookies|path_segment(:\d+)?|"
    r"(header|header_key|query_arg|query_key|cookie|cookie_key|form|form_key|multipart_filename):[^\s]*|"
    r"(json|json_key):(/[^\s]*)?)$"
)


class NoOptions(PolicyModel):
    """A field without options: ``uri_path: {}`` (or just ``uri_path``)."""


class HeadersField(PolicyModel):
    scope: Scope = "values"
    include: list[HeaderName] = Field(default_factory=list, description="Only these headers (names).")
    exclude: list[HeaderName] = Field(default_factory=list, description="Every header but these.")
    oversize: Oversize = Field(
        default="continue",
        description="Headers beyond header_inspection_limit or 200 fields: continue inspects those within, "
        "match or no_match decide the statement.",
    )


class CookiesField(PolicyModel):
    scope: Scope = "values"
    include: list[str] = Field(default_factory=list, description="Cookie names (case-sensitive).")
    exclude: list[str] = Field(default_factory=list)
    oversize: Oversize = Field(
        default="continue",
        description="Cookies beyond cookie_inspection_limit or 200 cookies: continue inspects those within, "
        "match or no_match decide the statement.",
    )


class QueryArgsField(PolicyModel):
    scope: Scope = "values"
    exclude: list[str] = Field(default_factory=list, description="Argument names (case-insensitive).")


class BodyField(PolicyModel):
    oversize: Oversize = "continue"


class FormField(PolicyModel):
    """Form-urlencoded arguments, or multipart fields and file names (by Content-Type)."""

    scope: Scope = "values"
    oversize: Oversize = "continue"


def _pointer(value: str) -> str:
    if not _JSON_POINTER.match(value):
        raise ValueError(f"expected a JSON Pointer such as /items/0/name (got {value!r})")
    return value


class JsonBodyField(PolicyModel):
    scope: Scope = "values"
    include_paths: list[Annotated[str, AfterValidator(_pointer)]] = Field(
        default_factory=list, description="JSON Pointers; a pointer covers everything below it. Empty: all."
    )
    invalid_fallback: Literal["none", "evaluate_as_string", "match", "no_match"] = Field(
        default="none", description="Invalid JSON: none inspects the strings found up to the error."
    )
    oversize: Oversize = "continue"


class BodyValuesField(PolicyModel):
    """The body as its Content-Type says: JSON keys/values, form or multipart fields, else raw text."""

    scope: Scope = "values"
    oversize: Oversize = "continue"


_SHORTHAND = {
    "method", "uri_path", "path_segments", "query_string", "all_query_args", "all_headers", "cookies",
    "body", "form", "json_body", "body_values",
}  # fmt: skip


class FieldToMatch(PolicyModel):
    """Exactly one request component."""

    method: NoOptions | None = None
    uri_path: NoOptions | None = None
    path_segments: NoOptions | None = None
    query_string: NoOptions | None = None
    query_arg: str | None = Field(default=None, description="One query argument (name case-insensitive).")
    all_query_args: QueryArgsField | None = None
    header: HeaderName | None = None
    all_headers: HeadersField | None = None
    cookie: str | None = Field(default=None, description="One cookie (name case-sensitive).")
    cookies: CookiesField | None = None
    body: BodyField | None = None
    form: FormField | None = None
    json_body: JsonBodyField | None = None
    body_values: BodyValuesField | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in _SHORTHAND:
                raise ValueError(f"unknown field {data!r}; expected one of: {', '.join(sorted(_SHORTHAND))}")
            return {data: {}}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> FieldToMatch:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one request component (got {', '.join(given) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


Fields = Annotated[list[FieldToMatch], BeforeValidator(_as_list), Field(min_length=1)]
Transformations = Annotated[list[TransformName], Field(max_length=10)]


class ByteMatch(PolicyModel):
    field: Fields
    match: Literal["exactly", "starts_with", "ends_with", "contains", "contains_word"] = "contains"
    value: Annotated[str, Field(min_length=1, max_length=200)]
    transformations: Transformations = Field(default_factory=list)

    @model_validator(mode="after")
    def _word(self) -> ByteMatch:
        if self.match == "contains_word" and not re.fullmatch(r"\w+", self.value, re.ASCII):
            raise ValueError("contains_word needs a value of letters, digits and _ only")
        return self


class RegexMatch(PolicyModel):
    field: Fields
    pattern: Regex = Field(description="RE2 syntax (no backreferences or lookaround): linear time.")
    transformations: Transformations = Field(default_factory=list)


class RegexSetMatch(PolicyModel):
    field: Fields
    set: str = Field(description="Name of a regex_pattern_sets entry: matches if any pattern does.")
    transformations: Transformations = Field(default_factory=list)


class SqliMatch(PolicyModel):
    field: Fields
    sensitivity: Literal["low", "high"] = "low"
    transformations: Transformations = Field(default_factory=list)


class XssMatch(PolicyModel):
    field: Fields
    transformations: Transformations = Field(default_factory=list)


class SizeConstraint(PolicyModel):
    field: Fields
    comparison: Literal["eq", "ne", "le", "lt", "ge", "gt"]
    size: Size
    transformations: Transformations = Field(default_factory=list)


class ForwardedIp(PolicyModel):
    header: HeaderName = "x-forwarded-for"
    position: Literal["first", "last", "any"] = "first"
    fallback: Literal["match", "no_match"] = Field(default="no_match", description="For a malformed value.")
    trusted_proxies: list[Cidr] = Field(
        default_factory=list,
        description="If set, the header is believed only from these peers; others are judged by their own address.",
    )


def _no_zero_prefix(value: Any) -> Any:
    if value.prefixlen == 0:
        raise ValueError(f"/0 is not allowed in an IP set (got {value})")
    return value


IpNet = Annotated[Cidr, AfterValidator(_no_zero_prefix)]


class IpSetMatch(PolicyModel):
    set: str | None = Field(default=None, description="Name of an ip_sets entry.")
    addresses: list[IpNet] | None = None
    forwarded_ip: ForwardedIp | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IpSetMatch:
        if (self.set is None) == (self.addresses is None):
            raise ValueError("give exactly one of set, addresses")
        return self


def _agg_key(value: str) -> str:
    if not _AGG_KEY.match(value):
        raise ValueError(
            "expected ip, forwarded_ip, method, uri_path, query_string, constant, header:<name>, "
            f"cookie:<name>, query_arg:<name> or label_namespace:<ns> (got {value!r})"
        )
    return value


def _store_url(value: str) -> str:
    # the Throttle's own check (same URLs, same refusal of passwords in URLs); imported here
    # because addons.policy.models imports this module to register the kind
    from addons.policy.models import _store_url as throttle_store_url

    return throttle_store_url(value)


def _window(value: Any) -> Any:
    from addons.policy.types import parse_duration

    seconds = parse_duration(value)
    if seconds not in (60, 120, 300, 600):
        raise ValueError(f"window must be one of 60s, 2m, 5m, 10m (got {value!r})")
    return int(seconds)


class RateBased(PolicyModel):
    limit: Annotated[int, Field(ge=1, le=2_000_000_000)]
    window: Annotated[int, BeforeValidator(_window)] = 300
    key: Annotated[list[Annotated[str, AfterValidator(_agg_key)]], Field(min_length=1)] = Field(
        default_factory=lambda: ["ip"]
    )
    forwarded_ip: ForwardedIp | None = None
    scope_down: Statement | None = None

    @model_validator(mode="after")
    def _keys(self) -> RateBased:
        if "constant" in self.key and (len(self.key) > 1 or self.scope_down is None):
            raise ValueError("key constant stands alone and needs a scope_down statement")
        if "forwarded_ip" in self.key and self.forwarded_ip is None:
            raise ValueError("key forwarded_ip needs a forwarded_ip configuration")
        return self


class LabelMatch(PolicyModel):
    scope: Literal["label", "namespace"] = "label"
    key: Annotated[str, Field(min_length=1, max_length=1024)]


class Statement(PolicyModel):
    """Exactly one of the statement types."""

    model_config = {**PolicyModel.model_config, "populate_by_name": True}

    byte_match: ByteMatch | None = None
    regex: RegexMatch | None = None
    regex_set: RegexSetMatch | None = None
    sqli: SqliMatch | None = None
    xss: XssMatch | None = None
    size_constraint: SizeConstraint | None = None
    ip_set: IpSetMatch | None = None
    rate_based: RateBased | None = None
    label_match: LabelMatch | None = None
    and_: Annotated[list[Statement], Field(min_length=2)] | None = Field(default=None, alias="and")
    or_: Annotated[list[Statement], Field(min_length=2)] | None = Field(default=None, alias="or")
    not_: Statement | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _exactly_one(self) -> Statement:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            names = ", ".join(n.rstrip("_") for n in given) or "none"
            raise ValueError(f"give exactly one statement type (got {names})")
        return self

    @property
    def kind(self) -> str:
        return next(n for n in type(self).model_fields if getattr(self, n) is not None).rstrip("_")

    def children(self) -> list[Statement]:
        if self.and_ is not None:
            return list(self.and_)
        if self.or_ is not None:
            return list(self.or_)
        if self.not_ is not None:
            return [self.not_]
        if self.rate_based is not None and self.rate_based.scope_down is not None:
            return [self.rate_based.scope_down]
        return []


class BlockResponse(PolicyModel):
    status: int = 403
    headers: Annotated[dict[HeaderName, str], Field(max_length=10)] = Field(default_factory=dict)
    body: str | None = Field(default=None, description="Name of a custom_response_bodies entry.")

    @field_validator("status")
    @classmethod
    def _status(cls, v: int) -> int:
        if v not in BLOCK_STATUSES:
            raise ValueError(f"status {v} is not allowed for a block response; expected one of AWS WAF's list")
        return v


class InsertHeaders(PolicyModel):
    insert_headers: Annotated[dict[HeaderName, str], Field(max_length=10)] = Field(
        default_factory=dict, description="Request headers added for the backend, prefixed x-amzn-waf-."
    )


def _action_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        if value not in ("allow", "block", "count"):
            raise ValueError(f"expected one of: allow, block, count (got {value!r})")
        return {value: {}}
    return value


class Action(PolicyModel):
    allow: InsertHeaders | None = None
    block: BlockResponse | None = None
    count: InsertHeaders | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        given = [n for n in ("allow", "block", "count") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of allow, block, count (got {', '.join(given) or 'none'})")
        return self

    @property
    def name(self) -> str:
        return "allow" if self.allow is not None else "block" if self.block is not None else "count"


ActionSpec = Annotated[Action, BeforeValidator(_action_shorthand)]


def _rule_id(value: str) -> str:
    if not _RULE_ID.match(value):
        raise ValueError(f"rule ids are letters, digits and _ . / : -, up to 128 (got {value!r})")
    return value


def _label(value: str) -> str:
    if not _LABEL.match(value):
        raise ValueError(f"labels are up to 6 parts of [A-Za-z0-9_.-] separated by ':' (got {value!r})")
    return value


RuleId = Annotated[str, AfterValidator(_rule_id)]
Label = Annotated[str, AfterValidator(_label)]


class WafRule(PolicyModel):
    id: RuleId
    priority: Annotated[int, Field(ge=0, le=1_000_000)]
    mode: Mode | None = Field(default=None, description="report: a block is recorded, not enforced.")
    rationale: str | None = None
    action: ActionSpec | None = None
    statement: Statement | None = None
    labels: list[Label] = Field(default_factory=list)
    managed_group: ManagedGroupName | None = None
    override_action: Literal["none", "count"] = Field(
        default="none", description="count: every rule of the group counts instead of acting."
    )
    rule_action_overrides: dict[str, ActionSpec] = Field(default_factory=dict)
    disabled_rules: list[str] = Field(default_factory=list, description="Rule ids (or globs) of the group.")
    scope_down: Statement | None = Field(default=None, description="The group inspects only matching requests.")

    @model_validator(mode="after")
    def _shape(self) -> WafRule:
        if (self.statement is None) == (self.managed_group is None):
            raise ValueError("give exactly one of statement, managed_group")
        if self.statement is not None:
            if self.action is None:
                raise ValueError("a rule with a statement needs an action")
            extras = [n for n in ("rule_action_overrides", "disabled_rules", "scope_down") if getattr(self, n)]
            if self.override_action != "none":
                extras.append("override_action")
            if extras:
                raise ValueError(f"{', '.join(extras)} only apply to managed_group rules")
            if self.statement.rate_based is not None and self.action.name == "allow":
                raise ValueError("a rate_based rule cannot allow")
            _no_nested_rate(self.statement, top=True)
        elif self.action is not None or self.labels:
            raise ValueError("a managed_group rule takes override_action and rule_action_overrides, not action/labels")
        return self


def _no_nested_rate(statement: Statement, *, top: bool) -> None:
    if statement.rate_based is not None and not top:
        raise ValueError("rate_based cannot be nested inside and/or/not")
    for child in statement.children():
        _no_nested_rate(child, top=False)


def _field_ref(value: str) -> str:
    if not _FIELD_REF.match(value):
        raise ValueError(
            "expected a field reference such as header:referer, query_arg:q, cookie:session, form:comment, "
            f"json:/content, path_segment:2, uri_path or body (got {value!r})"
        )
    return value


class Exclusion(PolicyModel):
    """Disable rules, or switch them to count, for some routes and/or fields (tuning false positives)."""

    routes: list[RouteKeyText] = Field(default_factory=list, description="Route keys; empty: every route.")
    rules: Annotated[list[str], Field(min_length=1)] = Field(
        description="Rule ids, globs (waf/xss-*) or group:<managed group>."
    )
    fields: list[Annotated[str, AfterValidator(_field_ref)]] = Field(
        default_factory=list, description="Only these fields (json:/content covers everything below). Empty: all."
    )
    action: Literal["disable", "count"] = "disable"


class CustomBody(PolicyModel):
    content_type: Literal["application/json", "text/plain", "text/html"] = "application/json"
    content: Annotated[str, Field(max_length=4096)]


class WebAclPolicy(PolicyModel):
    kind: Literal["WebAcl"]
    mode: Mode | None = None
    name: str = "sidegate"
    default_action: ActionSpec = Field(default_factory=lambda: Action(allow=InsertHeaders()))
    body_inspection_limit: Annotated[Size, Field(ge=1024, le=MAX_BODY_LIMIT)] = DEFAULT_BODY_LIMIT
    header_inspection_limit: Annotated[Size, Field(ge=1024, le=MAX_HEADER_LIMIT)] = Field(
        default=DEFAULT_HEADER_LIMIT, description="Bytes of the header section all_headers inspects."
    )
    cookie_inspection_limit: Annotated[Size, Field(ge=1024, le=MAX_HEADER_LIMIT)] = Field(
        default=DEFAULT_COOKIE_LIMIT, description="Bytes of the Cookie header(s) cookies inspects."
    )
    custom_response_bodies: Annotated[dict[str, CustomBody], Field(max_length=50)] = Field(default_factory=dict)
    regex_pattern_sets: dict[str, Annotated[list[Regex], Field(min_length=1, max_length=1000)]] = Field(
        default_factory=dict
    )
    ip_sets: dict[str, Annotated[list[IpNet], Field(min_length=1, max_length=100_000)]] = Field(default_factory=dict)
    rules: list[WafRule] = Field(default_factory=list)
    exclusions: list[Exclusion] = Field(default_factory=list)
    # Where rate_based counters live: the same settings, with the same meaning, as kind: Throttle's.
    store: Annotated[str, AfterValidator(_store_url)] = Field(
        default="memory",
        description="rate_based counters: memory (this process) or redis://host:port/db, rediss:// for TLS "
        "(shared by every replica using the same Redis).",
    )
    password: Secret | None = Field(default=None, description="The Redis password, as {secret_env} or {secret_file}.")
    store_timeout: Annotated[Duration, Field(ge=0.001, le=5)] = Field(
        default=0.25, description="Longest wait for Redis on one request before on_store_error applies."
    )
    on_store_error: Literal["allow", "deny", "local"] = Field(
        default="allow",
        description="When Redis is away, a rate_based rule: allow (does not match), deny (matches: its action "
        "applies), or local (per-instance counters at limit/replicas).",
    )
    replicas: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=1, description="Sidecars sharing the Redis store: on_store_error local divides each limit by it."
    )

    @field_validator("default_action")
    @classmethod
    def _default(cls, v: Action) -> Action:
        if v.count is not None:
            raise ValueError("the default action is allow or block")
        return v

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[WafRule]) -> list[WafRule]:
        ids: dict[str, int] = {}
        priorities: dict[int, str] = {}
        for rule in rules:
            if rule.id in ids:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            ids[rule.id] = rule.priority
            if rule.priority in priorities:
                raise ValueError(f"rules {priorities[rule.priority]!r} and {rule.id!r} share priority {rule.priority}")
            priorities[rule.priority] = rule.id
        return rules

    @model_validator(mode="after")
    def _references(self) -> WebAclPolicy:
        from addons.waf.managed import group_rule_ids

        total = sum(len(b.content.encode()) for b in self.custom_response_bodies.values())
        if total > 50 * 1024:
            raise ValueError("custom_response_bodies hold at most 50 KB together")
        known_ids = {r.id for r in self.rules}
        for rule in self.rules:
            for st in _walk(rule.statement, rule.scope_down):
                if st.regex_set is not None and st.regex_set.set not in self.regex_pattern_sets:
                    raise ValueError(f"rule {rule.id!r}: regex pattern set {st.regex_set.set!r} is not declared")
                if st.ip_set is not None and st.ip_set.set is not None and st.ip_set.set not in self.ip_sets:
                    raise ValueError(f"rule {rule.id!r}: IP set {st.ip_set.set!r} is not declared")
            actions = [rule.action, *rule.rule_action_overrides.values(), None]
            for action in actions:
                if action is not None and action.block is not None and action.block.body is not None:
                    if action.block.body not in self.custom_response_bodies:
                        raise ValueError(f"rule {rule.id!r}: response body {action.block.body!r} is not declared")
            if rule.managed_group is not None:
                members = group_rule_ids(rule.managed_group)
                known_ids |= set(members)
                for ref in [*rule.rule_action_overrides, *rule.disabled_rules]:
                    if not fnmatch.filter(members, ref):
                        raise ValueError(f"rule {rule.id!r}: {ref!r} names no rule of group {rule.managed_group}")
        body = self.default_action.block.body if self.default_action.block else None
        if body is not None and body not in self.custom_response_bodies:
            raise ValueError(f"default_action: response body {body!r} is not declared")
        groups = {r.managed_group for r in self.rules if r.managed_group}
        for i, exclusion in enumerate(self.exclusions):
            for ref in exclusion.rules:
                if ref.startswith("group:"):
                    if ref[6:] not in groups:
                        raise ValueError(f"exclusions[{i}]: {ref!r} is not a managed group this ACL uses")
                elif not fnmatch.filter(known_ids, ref):
                    raise ValueError(f"exclusions[{i}]: {ref!r} names no rule of this ACL")
        return self


def _walk(*statements: Statement | None) -> list[Statement]:
    out: list[Statement] = []
    stack = [s for s in statements if s is not None]
    while stack:
        st = stack.pop()
        out.append(st)
        stack.extend(st.children())
    return out


RateBased.model_rebuild()
Statement.model_rebuild()
