"""WAF (kind: WebAcl): rule engine, statements, fields, transformations, exclusions, trace, wiring."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pytest
from conftest import drive
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from addons.decision import Exchange, Flag, Reject
from addons.policy import models as policy_models
from addons.policy.errors import PolicyError
from addons.policy.loader import load_documents
from addons.policy.policyset import empty_policy_set
from addons.waf import Waf, WebAclPolicy, transforms
from addons.waf.managed import all_groups_policy, group_rules
from addons.waf.metrics import WafMatchCollector
from addons.waf.models import MANAGED_GROUPS
from addons.waf.rate import MemoryRateStore


class WafPlugin:
    """Test-only wiring: ``kind: Plugin`` with ``use: test_waf:WafPlugin`` and the ACL as config."""

    def __new__(cls, config: Mapping[str, Any]) -> Waf:  # type: ignore[misc]
        return Waf(WebAclPolicy.model_validate({"kind": "WebAcl", **config}), "policies/waf.yaml:1", enforced=True)


def acl(*rules: dict[str, Any], **fields: Any) -> WebAclPolicy:
    return WebAclPolicy.model_validate({"kind": "WebAcl", "rules": list(rules), **fields})


def rule(rid: str, priority: int, statement: dict[str, Any], action: Any = "block", **extra: Any) -> dict[str, Any]:
    return {"id": rid, "priority": priority, "action": action, "statement": statement, **extra}


def contains(field: Any, value: str, **extra: Any) -> dict[str, Any]:
    return {"byte_match": {"field": field, "match": "contains", "value": value, **extra}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(*rules: dict[str, Any], clock: Clock | None = None, **fields: Any) -> Waf:
    return Waf(acl(*rules, **fields), "policies/waf.yaml:1", enforced=True, clock=clock)


def exchange(
    path: str = "/api/items",
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    peer: str = "198.51.100.7",
) -> Exchange:
    h = http.Headers([(k.encode(), v.encode()) for k, v in (headers or [("host", "api.example.com")])])
    f = tflow.tflow(req=tutils.treq(method=method.encode(), path=path.encode(), headers=h, content=body))
    f.client_conn.peername = (peer, 50000)
    return Exchange(f, empty_policy_set())


def run(waf: Waf, ex: Exchange | None = None, **kw: Any) -> tuple[Reject | Flag | None, list[dict[str, Any]]]:
    """Both WAF phases as the checkpoint runner calls them; (decision, trace details)."""
    ex = ex or exchange(**kw)
    details = []
    result = waf.method_request(ex)
    details.append(ex.details.pop("waf", None))
    if result is None or isinstance(result, Flag):
        body_result = waf.method_request_body(ex)
        details.append(ex.details.pop("waf", None))
        result = body_result if body_result is not None else result
    return result, [d for d in details if d]


def blocked(waf: Waf, **kw: Any) -> bool:
    return isinstance(run(waf, **kw)[0], Reject)


# -- rule engine ------------------------------------------------------------------------------------


def test_rules_run_in_priority_order_and_the_first_terminating_action_wins():
    waf = make(
        rule("block-admin", 20, contains("uri_path", "/admin")),
        rule("allow-office", 10, contains({"header": "x-office"}, "yes"), action="allow"),
    )
    assert blocked(waf, path="/admin/users")
    assert not blocked(waf, path="/admin/users", headers=[("x-office", "yes")])  # lower number runs first


def test_default_action_applies_when_no_rule_terminates():
    waf = make(rule("allow-health", 1, contains("uri_path", "/health"), action="allow"), default_action="block")
    assert not blocked(waf, path="/health")
    decision, details = run(waf, path="/other")
    assert isinstance(decision, Reject) and decision.rule == "default_action"
    assert decision.reason == "waf_default_block" and decision.response_type == "WAF_FILTERED"
    assert details[-1]["terminating"] == {"rule": "default_action", "action": "block"}


def test_count_adds_labels_and_later_rules_match_label_or_namespace():
    waf = make(
        rule("tag-bot", 1, contains({"header": "user-agent"}, "bot"), action="count", labels=["client:bot:crawler"]),
        rule("tag-beta", 2, contains({"header": "x-beta"}, "1"), action="count", labels=["feature:beta"]),
        rule("bots-off-admin", 3, {"and": [{"label_match": {"key": "client:bot:crawler"}}, contains("uri_path", "/admin")]}),
        rule("no-bots-in-beta", 4, {"and": [{"label_match": {"scope": "namespace", "key": "client:bot"}},
                                            {"label_match": {"key": "feature:beta"}}]}),
    )  # fmt: skip
    assert not blocked(waf, headers=[("user-agent", "goodbot")])  # counted, not blocked
    assert blocked(waf, path="/admin", headers=[("user-agent", "goodbot")])
    decision, details = run(waf, headers=[("user-agent", "goodbot"), ("x-beta", "1")])
    assert isinstance(decision, Reject) and decision.rule == "no-bots-in-beta"
    labels = [d["labels"] for d in details][-1]
    assert labels == ["client:bot:crawler", "feature:beta"]


def test_label_match_sees_only_labels_of_earlier_rules():
    waf = make(
        rule("uses-label", 1, {"label_match": {"key": "later"}}),
        rule("adds-label", 2, contains("uri_path", "/"), action="count", labels=["later"]),
    )
    assert not blocked(waf)


def test_and_or_not_compose():
    statement = {
        "or": [
            {"and": [contains("uri_path", "/admin"), {"not": contains({"header": "x-role"}, "admin")}]},
            contains("query_string", "debug=1"),
        ]
    }
    waf = make(rule("r", 1, statement))
    assert blocked(waf, path="/admin")
    assert not blocked(waf, path="/admin", headers=[("x-role", "admin")])
    assert blocked(waf, path="/x?debug=1")
    assert not blocked(waf, path="/x")


def test_block_with_custom_status_headers_and_body():
    waf = make(
        rule("busy", 1, contains("uri_path", "/slow"), action={"block": {"status": 429, "headers": {"retry-after": "60"},
                                                                          "body": "busy"}}),
        custom_response_bodies={"busy": {"content_type": "text/plain", "content": "come back later"}},
    )  # fmt: skip
    ex = exchange(path="/slow")
    decision, _ = run(waf, ex)
    assert isinstance(decision, Reject)
    assert decision.status == 429 and ("retry-after", "60") in decision.headers
    assert ex.vars["waf_custom_body"] == ("text/plain", b"come back later")


def test_rule_in_report_mode_records_a_would_be_block_and_evaluation_goes_on():
    waf = make(
        rule("shadow", 1, contains("uri_path", "/x"), mode="report"),
        rule("tag", 2, contains("uri_path", "/x"), action="count", labels=["seen"]),
    )
    decision, details = run(waf, path="/x")
    assert isinstance(decision, Flag) and decision.report_only and decision.rule == "shadow"
    matches = [m for d in details for m in d["matches"]]
    assert [(m["rule"], m["action"], m["enforced"]) for m in matches] == [
        ("shadow", "block", False),
        ("tag", "count", True),
    ]


def test_allow_and_count_insert_prefixed_request_headers():
    waf = make(
        rule("c", 1, contains("uri_path", "/"), action={"count": {"insert_headers": {"seen": "1"}}}),
        rule("a", 2, contains("uri_path", "/ok"), action={"allow": {"insert_headers": {"trusted": "yes"}}}),
    )
    ex = exchange(path="/ok")
    assert run(waf, ex)[0] is None
    assert ex.request.headers["x-amzn-waf-seen"] == "1" and ex.request.headers["x-amzn-waf-trusted"] == "yes"


def test_header_rules_decide_before_the_body_arrives_and_body_rules_wait_for_it():
    waf = make(
        rule("hdr", 1, contains({"header": "x-bad"}, "1")),
        rule("body", 2, contains("body", "evil")),
        rule("hdr-after-body", 3, contains({"header": "x-late"}, "1")),
    )
    ex = exchange(headers=[("x-bad", "1")])
    assert isinstance(waf.method_request(ex), Reject)  # decided in the headers phase
    ex = exchange(method="POST", body=b"evil", headers=[("x-late", "1")])
    assert waf.method_request(ex) is None  # paused before the first body rule
    decision = waf.method_request_body(ex)
    assert isinstance(decision, Reject) and decision.rule == "body"  # priority order kept


# -- statements -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "value", "text", "expected"),
    [
        ("exactly", "secret", "secret", True),
        ("exactly", "secret", "secret2", False),
        ("starts_with", "Bearer ", "Bearer abc", True),
        ("starts_with", "Bearer ", "xBearer abc", False),
        ("ends_with", ".php", "/index.php", True),
        ("ends_with", ".php", "/index.php5", False),
        ("contains", "admin", "superadministrator", True),
        ("contains_word", "admin", "the admin page", True),
        ("contains_word", "admin", "superadministrator", False),
        ("contains_word", "admin", "admin_x", False),
        ("contains_word", "admin", "(admin)", True),
    ],
)
def test_byte_match_positional_constraints(match, value, text, expected):
    waf = make(rule("r", 1, {"byte_match": {"field": {"header": "x-v"}, "match": match, "value": value}}))
    assert blocked(waf, headers=[("x-v", text)]) is expected


def test_regex_and_pattern_sets_run_on_re2():
    waf = make(
        rule("rx", 1, {"regex": {"field": "uri_path", "pattern": r"^/v\d+/internal/"}}),
        rule(
            "set",
            2,
            {"regex_set": {"field": {"header": "user-agent"}, "set": "tools", "transformations": ["lowercase"]}},
        ),
        regex_pattern_sets={"tools": ["sqlmap", r"nikto/\d", "(?:masscan|zgrab)"]},
    )
    assert blocked(waf, path="/v2/internal/x")
    assert not blocked(waf, path="/api/v2/internal/x")
    assert blocked(waf, headers=[("user-agent", "Nikto/2.5")])
    assert not blocked(waf, headers=[("user-agent", "curl/8")])


def test_a_catastrophic_backtracking_pattern_runs_in_linear_time():
    # (a+)+$ against "aaa...ab" takes exponential time in a backtracking engine; RE2 is linear.
    waf = make(rule("redos", 1, {"regex": {"field": "body", "pattern": "(a+)+$"}}), body_inspection_limit="200KB")
    body = b"a" * 100_000 + b"!"
    start = time.process_time()
    assert not blocked(waf, method="POST", body=body)
    assert blocked(waf, method="POST", body=b"a" * 100_000)
    assert time.process_time() - start < 5.0  # a backtracking engine would not finish at all


def test_sqli_and_xss_detection_with_sensitivity():
    waf = make(
        rule("sqli", 1, {"sqli": {"field": {"query_arg": "id"}, "transformations": ["url_decode"]}}),
        rule("xss", 2, {"xss": {"field": "all_query_args", "transformations": ["url_decode", "html_entity_decode"]}}),
        rule("sqli-high", 3, {"sqli": {"field": {"query_arg": "h"}, "sensitivity": "high", "transformations": ["url_decode"]}}),
    )  # fmt: skip
    assert blocked(waf, path="/x?id=1%27%20OR%20%271%27%3D%271")
    assert not blocked(waf, path="/x?id=O%27Brien")
    assert blocked(waf, path="/x?q=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert not blocked(waf, path="/x?q=%3Cb%3Ebold%3C%2Fb%3E")
    assert not blocked(
        waf, path="/x?id=SELECT%20name%20FROM%20t%20WHERE%20id%20%3D%201"
    )  # a statement, not an injection
    assert blocked(waf, path="/x?h=x%27%20or%20y")  # HIGH also flags the bare quote-or shape


def test_size_constraint_counts_bytes_after_transformations():
    waf = make(
        rule("long-path", 1, {"size_constraint": {"field": "uri_path", "comparison": "gt", "size": 20}}),
        rule("big-body", 2, {"size_constraint": {"field": "body", "comparison": "ge", "size": "2KB"}}),
    )
    assert blocked(waf, path="/" + "a" * 30)
    assert not blocked(waf, path="/short")
    assert blocked(waf, method="POST", body=b"x" * 2000)
    assert not blocked(waf, method="POST", body=b"x" * 1999)


def test_ip_set_with_peer_and_forwarded_ip_positions_fallback_and_trusted_proxies():
    def waf_for(**fwd: Any) -> Waf:
        ip_set: dict[str, Any] = {"set": "bad"}
        if fwd:
            ip_set["forwarded_ip"] = fwd
        return make(rule("ips", 1, {"ip_set": ip_set}), ip_sets={"bad": ["203.0.113.0/24", "2001:db8::/32"]})

    peer = waf_for()
    assert blocked(peer, peer="203.0.113.9")
    assert blocked(peer, peer="::ffff:203.0.113.9")  # IPv4-mapped peer address
    assert blocked(peer, peer="2001:db8::1")
    assert not blocked(peer, peer="198.51.100.1")
    first = waf_for(header="x-forwarded-for", position="first")
    assert blocked(first, headers=[("x-forwarded-for", "203.0.113.9, 10.0.0.1")])
    assert not blocked(first, headers=[("x-forwarded-for", "10.0.0.1, 203.0.113.9")])
    assert not blocked(first, peer="203.0.113.9")  # header absent: the statement does not apply
    last = waf_for(header="x-forwarded-for", position="last")
    assert blocked(last, headers=[("x-forwarded-for", "10.0.0.1, 203.0.113.9")])
    anywhere = waf_for(header="x-forwarded-for", position="any")
    assert blocked(anywhere, headers=[("x-forwarded-for", "10.0.0.1, 203.0.113.9, 10.0.0.2")])
    strict = waf_for(header="x-forwarded-for", fallback="match")
    assert blocked(strict, headers=[("x-forwarded-for", "not-an-ip")])
    assert not blocked(first, headers=[("x-forwarded-for", "not-an-ip")])
    trusted = waf_for(header="x-forwarded-for", trusted_proxies=["10.0.0.0/8"])
    assert blocked(trusted, peer="10.1.2.3", headers=[("x-forwarded-for", "203.0.113.9")])
    assert not blocked(trusted, peer="198.51.100.1", headers=[("x-forwarded-for", "203.0.113.9")])  # not believed


def test_rate_based_counts_per_key_in_a_sliding_window_with_scope_down():
    clock = Clock()
    waf = make(
        rule("login-rate", 1, {"rate_based": {"limit": 10, "window": "1m", "key": ["ip", "header:x-user"],
                                              "scope_down": contains("uri_path", "/login")}}),
        clock=clock,
    )  # fmt: skip
    outcomes = [blocked(waf, path="/login", headers=[("x-user", "ana")]) for _ in range(12)]
    assert outcomes == [False] * 10 + [True] * 2
    assert not blocked(waf, path="/login", headers=[("x-user", "bob")])  # another key
    assert not blocked(waf, path="/other", headers=[("x-user", "ana")])  # outside the scope-down
    clock.now += 125  # two windows later the count has aged out
    assert not blocked(waf, path="/login", headers=[("x-user", "ana")])


def test_rate_store_is_bounded():
    store = MemoryRateStore(max_keys=100)
    for i in range(500):
        store.hit(f"k{i}", 60.0, 0.0)
    assert len(store) == 100


# -- fields -----------------------------------------------------------------------------------------


def test_fields_query_args_headers_cookies_and_path_segments():
    waf = make(
        rule("seg", 1, contains("path_segments", "..", match="exactly") if False else {"byte_match": {"field": "path_segments", "match": "exactly", "value": "secret"}}),
        rule("arg", 2, {"byte_match": {"field": {"query_arg": "Mode"}, "match": "exactly", "value": "debug"}}),
        rule("keys", 3, {"byte_match": {"field": {"all_query_args": {"scope": "keys"}}, "match": "exactly", "value": "__debug"}}),
        rule("hdrs", 4, contains({"all_headers": {"exclude": ["x-free-text"]}}, "<script")),
        rule("ck", 5, {"byte_match": {"field": {"cookie": "role"}, "match": "exactly", "value": "root"}}),
        rule("ckall", 6, contains({"cookies": {"include": ["pref"]}}, "evil")),
    )  # fmt: skip
    assert blocked(waf, path="/a/secret/b")
    assert not blocked(waf, path="/a/secrets/b")
    assert blocked(waf, path="/x?mode=debug")  # argument names are case-insensitive
    assert blocked(waf, path="/x?__debug=1")
    assert blocked(waf, headers=[("x-anything", "<script>")])  # every header
    assert not blocked(waf, headers=[("x-free-text", "<script>")])
    assert blocked(waf, headers=[("cookie", "a=1; role=root")])
    assert not blocked(waf, headers=[("cookie", "Role=root")])  # cookie names are case-sensitive
    assert blocked(waf, headers=[("cookie", "pref=evil")])
    assert not blocked(waf, headers=[("cookie", "other=evil")])


def test_body_form_multipart_and_json_fields():
    waf = make(
        rule("form", 1, contains("form", "bad-value")),
        rule("filename", 2, {"byte_match": {"field": "form", "match": "ends_with", "value": ".php"}}),
        rule("json-path", 3, contains({"json_body": {"include_paths": ["/user/name"]}}, "evil")),
        rule("json-keys", 4, {"byte_match": {"field": {"json_body": {"scope": "keys"}}, "match": "exactly", "value": "$where"}}),
        rule("json-invalid", 5, contains({"json_body": {"invalid_fallback": "match", "include_paths": ["/none"]}}, "zzz")),
    )  # fmt: skip
    form = [("content-type", "application/x-www-form-urlencoded")]
    assert blocked(waf, method="POST", headers=form, body=b"a=1&comment=bad-value")
    boundary = "XyZ"
    mp = [("content-type", f"multipart/form-data; boundary={boundary}")]
    part = b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="shell.php"\r\n\r\n<?php ?>\r\n--XyZ--\r\n'
    assert blocked(waf, method="POST", headers=mp, body=part)
    part = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nbad-value\r\n--XyZ--\r\n'
    assert blocked(waf, method="POST", headers=mp, body=part)
    js = [("content-type", "application/json")]
    assert blocked(waf, method="POST", headers=js, body=json.dumps({"user": {"name": "evil"}}).encode())
    assert not blocked(waf, method="POST", headers=js, body=json.dumps({"user": {"bio": "evil"}}).encode())
    assert blocked(waf, method="POST", headers=js, body=b'{"q": {"$where": "1"}}')
    assert blocked(waf, method="POST", headers=js, body=b'{"broken": ')  # invalid JSON: fallback match
    assert not blocked(waf, method="POST", headers=js, body=b'{"fine": 1}')


def test_body_inspection_limit_and_oversize_handling():
    big = b'{"pad": "' + b"x" * 20_000 + b'", "tail": "needle"}'
    js = [("content-type", "application/json")]
    cont = make(rule("r", 1, contains("body", "needle")))
    assert not blocked(cont, method="POST", headers=js, body=big)  # beyond the 16 KB default: not inspected
    assert blocked(
        make(rule("r", 1, contains("body", "needle")), body_inspection_limit="64KB"), method="POST", body=big
    )
    match = make(rule("r", 1, contains({"body": {"oversize": "match"}}, "never")))
    assert blocked(match, method="POST", body=big)
    assert not blocked(match, method="POST", body=b"small")
    no_match = make(rule("r", 1, contains({"body": {"oversize": "no_match"}}, "x")))
    assert not blocked(no_match, method="POST", body=big)
    assert blocked(no_match, method="POST", body=b"x")
    # truncated JSON is inspected up to the limit (strings found so far)
    lenient = make(rule("r", 1, contains({"json_body": {}}, "early")))
    assert blocked(lenient, method="POST", headers=js, body=b'{"a": "early", "pad": "' + b"y" * 20_000 + b'"}')


# -- transformations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("url_decode", "%253Cscript%253E", "<script>"),
        ("url_decode", "a+b%20c", "a b c"),
        ("url_decode_uni", "%u003cscript%u003e", "<script>"),
        ("html_entity_decode", "&lt;a&#x3e;&#60;&quot;", '<a><"'),
        ("js_decode", r"\x3cscript\u003e\u{41}\'", "<script>A'"),
        ("css_decode", r"\6a avascript\:", "javascript:"),
        ("escape_seq_decode", r"a\tb\x41\101", "a\tbAA"),
        ("base64_decode", "PHNjcmlwdD4=", "<script>"),
        ("base64_decode", "not base64!", "not base64!"),
        ("base64_decode_ext", "PHNj cmlw dD4", "<script>"),
        ("hex_decode", "3c7363726970743e", "<script>"),
        ("sql_hex_decode", "select 0x61646d696e", "select admin"),
        ("lowercase", "SeLeCt", "select"),
        ("compress_whitespace", "a \t\n\r\f\v\xa0 b", "a b"),
        ("cmd_line", "c^a\"t /e'tc/pa\\sswd; ls", "cat/etc/passwd ls"),
        ("remove_nulls", "a\0b", "ab"),
        ("replace_nulls", "a\0b", "a b"),
        ("replace_comments", "un/**/ion sel/* x */ect /* open", "un ion sel ect  "),
        ("normalize_path", "/a//b/./c/../d/", "/a/b/d/"),
        ("normalize_path", "/../../etc/passwd", "/etc/passwd"),
        ("normalize_path_win", "\\a\\..\\b\\.\\c", "/b/c"),
        ("utf8_to_unicode", "＜ｓｃｒｉｐｔ＞", "<script>"),
    ],
)
def test_transformations(name, given, expected):
    assert transforms.TRANSFORMS[name](given) == expected


def test_url_decode_repeats_until_stable_but_is_bounded():
    assert transforms.url_decode("%2525252e") == "%2e"  # three passes, then it stops
    assert transforms.url_decode("plain") == "plain"


def test_transformations_apply_in_order_per_statement():
    waf = make(rule("r", 1, contains("all_query_args", "<script", transformations=["url_decode", "lowercase"])))
    assert blocked(waf, path="/x?q=%253CSCRIPT%253E")
    order_matters = make(rule("r", 1, contains("all_query_args", "<script", transformations=["lowercase"])))
    assert not blocked(order_matters, path="/x?q=%3CSCRIPT%3E")


# -- exclusions, trace, metrics -----------------------------------------------------------------------


def test_per_route_exclusions_disable_or_count_rules_for_routes_and_fields():
    policy = acl(
        rule("xss-like", 1, contains({"json_body": {}}, "<b")),
        rule("other", 2, contains({"json_body": {}}, "forbidden")),
        {"id": "managed-xss", "priority": 10, "managed_group": "xss"},
        exclusions=[
            {"routes": ["POST /articles"], "rules": ["xss-like"], "fields": ["json:/content"]},
            {"routes": ["POST /articles"], "rules": ["group:xss"], "fields": ["json:/content"], "action": "count"},
            {"routes": ["POST /drafts"], "rules": ["xss-*", "other"]},
        ],
    )
    waf = Waf(policy, "policies/waf.yaml:1", enforced=True)
    js = [("content-type", "application/json")]

    def decide(route: str, doc: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
        ex = exchange(method="POST", path="/" + route.split("/", 1)[1], headers=js, body=json.dumps(doc).encode())
        ex._route = type("Route", (), {"key": route})()  # the router is not under test here
        ex._routed = True
        return run(waf, ex)

    assert isinstance(decide("POST /comments", {"content": "<b>hi</b>"})[0], Reject)
    assert decide("POST /articles", {"content": "<b>hi</b>"})[0] is None  # excluded field
    assert isinstance(decide("POST /articles", {"title": "<b>hi</b>"})[0], Reject)  # other fields still inspected
    decision, details = decide("POST /articles", {"content": "<script>alert(1)</script>"})
    assert decision is None  # the managed xss rules only count there
    assert {m["action"] for d in details for m in d["matches"]} == {"count"}
    assert decide("POST /drafts", {"content": "<b>forbidden</b>"})[0] is None


def test_trace_detail_names_rule_field_transformations_excerpt_and_labels():
    waf = make(rule("r", 1, contains("all_query_args", "<script", transformations=["url_decode"]), labels=["x:y"]))
    decision, details = run(waf, path="/x?q=" + "A" * 100 + "%3Cscript%3E%0A" + "B" * 100)
    assert isinstance(decision, Reject)
    match = details[-1]["matches"][0]
    assert match["rule"] == "r" and match["field"] == "query_arg:q" and match["transformations"] == ["url_decode"]
    assert match["labels"] == ["x:y"] and details[-1]["terminating"] == {"rule": "r", "action": "block"}
    assert "<script>\\n" in match["excerpt"] and len(match["excerpt"]) < 80  # escaped, truncated around the match
    json.dumps(details)  # plain data only


def test_secret_headers_are_never_excerpted():
    waf = make(rule("r", 1, contains({"header": "authorization"}, "Bearer")))
    _, details = run(waf, headers=[("authorization", "Bearer s3cr3t-token")])
    assert details[-1]["matches"][0]["excerpt"] == "(redacted)"


def test_rule_matches_are_counted_for_metrics():
    waf = make(rule("metric-rule", 1, contains("uri_path", "/m"), action="count"))
    run(waf, path="/m")
    families = list(WafMatchCollector().collect())
    samples = {(s.labels["rule"], s.labels["action"]): s.value for f in families for s in f.samples}
    assert samples[("metric-rule", "count")] >= 1


# -- policy loading -----------------------------------------------------------------------------------


def load_error(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, text: str) -> str:
    """The PolicyError loading ``policies/waf.yaml`` with ``text`` gives (kind: WebAcl registered)."""
    monkeypatch.setitem(policy_models.KINDS, "WebAcl", WebAclPolicy)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "waf.yaml").write_text(text)
    with pytest.raises(PolicyError) as e:
        load_documents(tmp_path / "policies")
    return str(e.value)


def test_policy_errors_name_file_line_and_field(tmp_path, monkeypatch):
    text = load_error(
        tmp_path,
        monkeypatch,
        "kind: WebAcl\n"
        "rules:\n"
        "  - id: backref\n"
        "    priority: 1\n"
        "    action: block\n"
        "    statement:\n"
        "      regex: {field: uri_path, pattern: '(a)\\1'}\n"
        "  - id: typo\n"
        "    priority: 2\n"
        "    action: blok\n"
        "    statement: {byte_match: {field: uri_path, value: x}}\n",
    )
    assert "policies/waf.yaml:7:" in text and "rules[0].statement.regex.pattern: invalid regular expression" in text
    assert "policies/waf.yaml:10:" in text and "expected one of: allow, block, count" in text


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"rules": [rule("a", 1, contains("uri_path", "x")), rule("b", 1, contains("uri_path", "y"))]},
            "share priority 1",
        ),
        (
            {"rules": [rule("a", 1, contains("uri_path", "x")), rule("a", 2, contains("uri_path", "y"))]},
            "duplicate rule id",
        ),
        ({"rules": [rule("a", 1, {"regex_set": {"field": "uri_path", "set": "nope"}})]}, "not declared"),
        ({"rules": [rule("a", 1, {"ip_set": {"addresses": ["0.0.0.0/0"]}})]}, "/0 is not allowed"),
        ({"rules": [rule("a", 1, {"not": {"rate_based": {"limit": 10}}})]}, "rate_based cannot be nested"),
        ({"rules": [rule("a", 1, contains("uri_path", "x"), action={"block": {"status": 418}})]}, "status 418"),
        (
            {"rules": [{"id": "m", "priority": 1, "managed_group": "sqli", "disabled_rules": ["waf/xss-001"]}]},
            "names no rule",
        ),
        ({"exclusions": [{"rules": ["nothing-*"]}]}, "names no rule"),
        (
            {"rules": [rule("a", 1, {"byte_match": {"field": "uri_path", "match": "contains_word", "value": "a b"}})]},
            "letters, digits",
        ),
        ({"rules": [rule("a", 1, {"regex": {"field": "nope", "pattern": "x"}})]}, "unknown field"),
    ],
)
def test_invalid_acls_are_rejected_at_load(doc, message):
    with pytest.raises(ValueError, match=message):
        WebAclPolicy.model_validate({"kind": "WebAcl", **doc})


def test_managed_groups_have_ids_rationales_and_labels():
    assert set(MANAGED_GROUPS) == {
        "core",
        "sqli",
        "xss",
        "lfi",
        "rce",
        "ssrf",
        "known_bad_inputs",
        "nosql_and_prototype",
        "xxe",
    }
    for group in MANAGED_GROUPS:
        rules = group_rules(group)
        assert rules, group
        for r in rules:
            assert r.id.startswith(f"waf/{group}-") and r.rationale and "\n" not in r.rationale
            assert f"managed:{group}:{r.id.rsplit('/', 1)[1]}" in r.labels


def test_managed_ssrf_catches_every_spelling_of_loopback_and_metadata():
    waf = make(*all_groups_policy())
    for host in ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0", "[::1]", "[::ffff:127.0.0.1]",
                 "[::ffff:7f00:1]", "169.254.169.254", "2852039166", "0xa9fea9fe", "[fd00:ec2::254]",
                 "metadata.google.internal", "localhost", "api.localhost", "10.0.0.8", "[fe80::1]"]:  # fmt: skip
        assert blocked(waf, path=f"/fetch?url=http%3A%2F%2F{host}%2Fx"), host
    assert not blocked(waf, path="/fetch?url=https%3A%2F%2Fapi.example.com%2Fhook")


def test_managed_log4shell_is_found_in_any_header_and_obfuscated():
    waf = make(*all_groups_policy())
    for value in ["${jndi:ldap://x/a}", "${${lower:j}ndi:ldap://x/a}", "${${::-j}${::-n}di:rmi://x/a}",
                  "${${env:X:-j}ndi${env:X:-:}ldap://x/a}"]:  # fmt: skip
        assert blocked(waf, headers=[("x-some-custom-header", value)]), value
    assert not blocked(waf, headers=[("x-template", "Hello ${user.name}")])


# -- wiring through the gateway (test-only: kind Plugin) --------------------------------------------


WAF_PLUGIN = """
    kind: Plugin
    use: test_waf:WafPlugin
    config:
      rules:
        - {id: no-evil, priority: 1, action: block, statement: {byte_match: {field: all_query_args, value: evil}}}
        - id: teapot
          priority: 2
          action: {block: {status: 503, headers: {x-why: maintenance}, body: down}}
          statement: {byte_match: {field: uri_path, match: starts_with, value: /maint}}
        - {id: managed-xss, priority: 10, managed_group: xss}
      custom_response_bodies:
        down: {content_type: application/json, content: '{"error":"maintenance"}'}
"""


def gw_flow(path: str, method: str = "GET", body: bytes = b"") -> http.HTTPFlow:
    headers = ((b"host", b"api.example"), (b"content-type", b"application/json"))
    return tflow.tflow(req=tutils.treq(method=method.encode(), path=path.encode(), headers=headers, content=body))


async def test_gateway_answers_waf_blocks_as_api_gateway_does(make_gateway, backend):
    _, gate = make_gateway({"waf.yaml": WAF_PLUGIN}, upstream=backend.url)
    f = await drive(gate, gw_flow("/items?q=evil"))
    assert f.response.status_code == 403
    assert json.loads(f.response.content) == {"message": "Forbidden"}
    assert f.response.headers["x-amzn-ErrorType"] == "ForbiddenException"
    entry = next(e for e in f.metadata["sidegate"]["trace"] if e["plugin"] == "waf")
    assert entry["rule"] == "no-evil" and entry["detail"]["matches"][0]["field"] == "query_arg:q"

    f = await drive(gate, gw_flow("/maint/now"))
    assert f.response.status_code == 503 and f.response.headers["x-why"] == "maintenance"
    assert json.loads(f.response.content) == {"error": "maintenance"}  # the WAF's custom body wins

    f = await drive(gate, gw_flow("/comments", "POST", json.dumps({"c": "<svg onload=alert(1)>"}).encode()))
    assert f.response.status_code == 403


async def test_gateway_forwards_allowed_requests_whole(make_gateway, backend):
    _, gate = make_gateway({"waf.yaml": WAF_PLUGIN}, upstream=backend.url)
    big = json.dumps({"text": "y" * 40_000}).encode()
    f = await drive(gate, gw_flow("/upload", "POST", big))
    assert f.response is None or f.response.status_code != 403
    assert f.request.content == big  # nothing beyond the inspection limit is cut


RELOAD_ACL = """
    kind: WebAcl
    rules:
      - {id: reload-rate, priority: 1, action: block, statement: {rate_based: {limit: 3, window: 1m}}}
"""


async def test_memory_rate_counters_survive_a_policy_reload(make_gateway, backend, tmp_path):
    import textwrap

    _, gate = make_gateway({"waf.yaml": RELOAD_ACL}, upstream=backend.url)
    codes = [(await drive(gate, gw_flow("/items"))).response.status_code for _ in range(2)]
    edited = textwrap.dedent(RELOAD_ACL).lstrip() + "name: edited\n"
    (tmp_path / "policies" / "waf.yaml").write_text(edited)
    assert gate.reload()
    flows = [await drive(gate, gw_flow("/items")) for _ in range(2)]
    assert codes + [f.response.status_code for f in flows] == [200, 200, 200, 403]  # 4 requests, limit 3
    entry = next(e for e in flows[-1].metadata["sidegate"]["trace"] if e["plugin"] == "waf")
    assert entry["detail"]["acl"] == "edited"  # the new set decided, with the old counts
    [rate] = entry["detail"]["rate"]
    assert (rate["rule"], rate["store"], rate["limit"]) == ("reload-rate", "memory", 3)
    assert rate["count"] == pytest.approx(4, abs=0.05)
