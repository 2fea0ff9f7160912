"""AWS WAF's header and cookie inspection limits (first 8 KB, at most 200 fields or cookies) and the
``oversize`` handling of ``all_headers`` and ``cookies`` (continue, match, no_match)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import drive
from mitmproxy.test import tflow, tutils
from test_waf import acl, blocked, contains, exchange, load_error, make, rule, run

from addons.decision import Reject
from addons.waf import Waf

ATTACK = ("x-late", "<script>alert(1)</script>")


def pads(n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"x-pad-{i:03d}", "p") for i in range(start, start + n)]


def section(name: str, value: str) -> int:
    """Bytes a header field counts toward the limit: ``name: value\\r\\n``."""
    return len(name) + len(value) + 4


# -- headers ----------------------------------------------------------------------------------------


def test_all_headers_inspect_the_first_200_fields_and_oversize_decides_beyond():
    within = [*pads(199), ATTACK]  # the attack is field 200
    beyond = [*pads(200), ATTACK]  # field 201
    cont = make(rule("r", 1, contains("all_headers", "<script")))
    assert blocked(cont, headers=within)
    assert not blocked(cont, headers=beyond)  # continue: not inspected
    assert not blocked(
        make(rule("r", 1, contains({"all_headers": {"oversize": "continue"}}, "<script"))), headers=beyond
    )

    match = make(rule("r", 1, contains({"all_headers": {"oversize": "match"}}, "never-sent")))
    assert blocked(match, headers=beyond)
    assert not blocked(match, headers=within)

    no_match = make(rule("r", 1, contains({"all_headers": {"oversize": "no_match"}}, "<script")))
    assert blocked(no_match, headers=within)
    assert not blocked(no_match, headers=[ATTACK, *pads(200)])  # over: no match, even for what lies within


def test_all_headers_inspect_the_first_8kb_counted_as_an_http1_header_block():
    tail = ("x-evil", "<script>")

    def padded(extra: int) -> list[tuple[str, str]]:
        # the section is 8,192 bytes exactly at extra=0
        return [("x-pad", "a" * (8192 - section("x-pad", "") - section(*tail) + extra)), tail]

    whole = make(rule("r", 1, contains("all_headers", "<script>")))
    start = make(rule("r", 1, contains("all_headers", "<scrip")))
    match = make(rule("r", 1, contains({"all_headers": {"oversize": "match"}}, "never-sent")))
    assert blocked(whole, headers=padded(0)) and not blocked(match, headers=padded(0))  # at the limit: within
    assert blocked(whole, headers=padded(2)) and blocked(match, headers=padded(2))  # only the CRLF is beyond
    # the limit cuts the value: its start is inspected, the rest is not
    assert not blocked(whole, headers=padded(3)) and blocked(start, headers=padded(3))
    # a header whose name lies beyond the limit is not inspected at all, not even its name
    keys = make(rule("r", 1, {"byte_match": {"field": {"all_headers": {"scope": "keys"}}, "match": "exactly", "value": "x-evil"}}))  # fmt: skip
    assert blocked(keys, headers=padded(0))
    assert not blocked(keys, headers=padded(20)) and not blocked(start, headers=padded(20))
    assert blocked(match, headers=padded(20))


def test_the_cookie_header_counts_toward_the_header_section():
    headers = [("cookie", "session=" + "s" * 8200), ATTACK]
    assert not blocked(
        make(rule("r", 1, contains({"all_headers": {"exclude": ["cookie"]}}, "<script"))), headers=headers
    )
    assert blocked(make(rule("r", 1, contains({"all_headers": {"oversize": "match"}}, "never-sent"))), headers=headers)


def test_a_single_header_field_is_inspected_beyond_the_limits():
    single = make(rule("r", 1, contains({"header": "x-late"}, "<script")))
    assert blocked(single, headers=[*pads(250), ATTACK])
    assert blocked(single, headers=[("x-pad", "a" * 20_000), ATTACK])
    assert not blocked(
        make(rule("r", 1, contains("all_headers", "<script"))), headers=[("x-pad", "a" * 20_000), ATTACK]
    )


def test_header_inspection_limit_is_a_setting_of_the_document():
    headers = [("x-pad", "a" * 9000), ATTACK]
    assert not blocked(make(rule("r", 1, contains("all_headers", "<script"))), headers=headers)
    assert blocked(
        make(rule("r", 1, contains("all_headers", "<script")), header_inspection_limit="16KB"), headers=headers
    )
    match = make(rule("r", 1, contains({"all_headers": {"oversize": "match"}}, "x")), header_inspection_limit="16KB")
    assert not blocked(match, headers=headers)


# -- cookies ----------------------------------------------------------------------------------------


def cookie_header(n: int, *extra: str) -> list[tuple[str, str]]:
    return [("cookie", "; ".join([*(f"c{i:03d}=v" for i in range(n)), *extra]))]


def test_cookies_inspect_the_first_200_cookies_and_oversize_decides_beyond():
    within, beyond = cookie_header(199, "evil=<script>"), cookie_header(200, "evil=<script>")
    cont = make(rule("r", 1, contains("cookies", "<script")))
    assert blocked(cont, headers=within)
    assert not blocked(cont, headers=beyond)

    match = make(rule("r", 1, contains({"cookies": {"oversize": "match"}}, "never-sent")))
    assert blocked(match, headers=beyond)
    assert not blocked(match, headers=within)

    no_match = make(rule("r", 1, contains({"cookies": {"oversize": "no_match"}}, "<script")))
    assert blocked(no_match, headers=within)
    assert not blocked(no_match, headers=[("cookie", "; ".join(["evil=<script>", *(f"c{i}=v" for i in range(200))]))])

    # a single cookie field names its cookie: found wherever it is
    assert blocked(make(rule("r", 1, contains({"cookie": "evil"}, "<script"))), headers=beyond)


def test_cookies_inspect_the_first_8kb_of_the_cookie_headers():
    tail = "evil=<script>"

    def padded(extra: int) -> list[tuple[str, str]]:
        # 8,192 bytes of cookies exactly at extra=0
        return [("cookie", "pad=" + "a" * (8192 - len("pad=") - 2 - len(tail) + extra) + "; " + tail)]

    whole = make(rule("r", 1, contains("cookies", "<script>")))
    start = make(rule("r", 1, contains("cookies", "<scrip")))
    match = make(rule("r", 1, contains({"cookies": {"oversize": "match"}}, "never-sent")))
    assert blocked(whole, headers=padded(0)) and not blocked(match, headers=padded(0))
    assert (
        not blocked(whole, headers=padded(1))
        and blocked(start, headers=padded(1))
        and blocked(match, headers=padded(1))
    )
    names = make(rule("r", 1, contains({"cookies": {"scope": "keys"}}, "evil")))
    assert blocked(names, headers=padded(0))
    assert not blocked(names, headers=padded(10)) and not blocked(start, headers=padded(10))
    assert blocked(make(rule("r", 1, contains({"cookie": "evil"}, "<script>"))), headers=padded(10_000))

    # several Cookie headers count as one, joined by "; "
    split = [("cookie", padded(0)[0][1].removesuffix("; " + tail)), ("cookie", tail)]
    assert blocked(whole, headers=split) and not blocked(match, headers=split)
    split = [("cookie", padded(1)[0][1].removesuffix("; " + tail)), ("cookie", tail)]
    assert not blocked(whole, headers=split) and blocked(match, headers=split)


def test_cookie_inspection_limit_is_a_setting_of_the_document():
    headers = [("cookie", "pad=" + "a" * 9000 + "; evil=<script>")]
    assert blocked(make(rule("r", 1, contains("cookies", "<script")), cookie_inspection_limit="10KB"), headers=headers)
    with pytest.raises(ValueError, match="cookie_inspection_limit"):
        acl(cookie_inspection_limit="1MB")


# -- trace, exclusions, managed rules ---------------------------------------------------------------


def test_an_oversize_match_says_so_in_the_trace_and_decides_with_the_headers():
    waf = make(
        rule("hdr", 1, contains({"all_headers": {"oversize": "match"}}, "never-sent"), action="count"),
        rule("ck", 2, contains({"cookies": {"oversize": "match"}}, "never-sent")),
    )
    decision, details = run(waf, headers=[*pads(201), *cookie_header(201)])
    assert isinstance(decision, Reject)
    assert details[0]["phase"] == "headers"
    hdr, ck = details[0]["matches"]
    assert (hdr["rule"], hdr["action"], hdr["field"]) == ("hdr", "count", "headers")
    assert hdr["excerpt"] == "(headers larger than the inspection limit)"
    assert (ck["rule"], ck["field"], ck["excerpt"]) == ("ck", "cookies", "(cookies larger than the inspection limit)")


def test_an_exclusion_of_the_headers_field_leaves_the_oversize_decision_out():
    policy = acl(
        rule("r", 1, contains({"all_headers": {"oversize": "match"}}, "<script")),
        exclusions=[{"rules": ["r"], "fields": ["headers"]}],
    )
    waf = Waf(policy, "policies/waf.yaml:1", enforced=True)
    assert not blocked(waf, headers=pads(201))
    assert blocked(waf, headers=[ATTACK, *pads(201)])  # what lies within is still inspected


def test_managed_core_counts_a_header_section_beyond_the_limit_and_authors_can_block_on_it():
    smuggle = ("x-note", "a%0d%0aTransfer-Encoding: chunked")
    padding = [("user-agent", "client/1.0"), ("x-pad", "a" * 8200)]
    core = make({"id": "core", "priority": 1, "managed_group": "core"})
    assert blocked(core, headers=[("user-agent", "client/1.0"), smuggle])  # waf/core-011 within the limit
    decision, details = run(core, headers=[*padding, smuggle])
    assert decision is None  # beyond the limit the header rules do not see it (oversize: continue) ...
    [m] = [m for d in details for m in d["matches"]]
    assert (m["rule"], m["action"], m["field"]) == ("waf/core-016", "count", "headers")  # ... but it is counted
    assert "managed:core:core-016" in m["labels"]
    # single-header rules still see their header: Transfer-Encoding smuggling after the padding
    assert blocked(core, headers=[*padding, ("transfer-encoding", "chunked, identity")])

    strict = make(
        {"id": "core", "priority": 1, "managed_group": "core"},
        rule("no-oversize", 2, {"label_match": {"key": "managed:core:core-016"}}),
    )
    assert blocked(strict, headers=[*padding, smuggle])
    author = make(rule("r", 1, {"regex": {"field": {"all_headers": {"oversize": "match"}}, "pattern": "[\\r\\n]", "transformations": ["url_decode"]}}))  # fmt: skip
    assert blocked(author, headers=[smuggle]) and blocked(author, headers=[*padding, smuggle])


def test_managed_groups_inspect_headers_and_cookies_with_continue():
    from addons.waf.managed import group_rules
    from addons.waf.models import MANAGED_GROUPS, Statement

    def fields(st: Statement | None):
        if st is None:
            return
        for leaf in (st.byte_match, st.regex, st.regex_set, st.sqli, st.xss, st.size_constraint):
            if leaf is not None:
                yield from leaf.field
        for child in st.children():
            yield from fields(child)

    seen = {}
    for group in MANAGED_GROUPS:
        for r in group_rules(group):
            for f in fields(r.statement):
                spec = f.all_headers or f.cookies
                if spec is not None:
                    seen[r.id] = spec.oversize
    assert seen.pop("waf/core-016") == "match"
    assert seen and set(seen.values()) == {"continue"}


# -- loading ----------------------------------------------------------------------------------------


def test_an_invalid_oversize_value_is_a_load_error_with_file_and_line(tmp_path, monkeypatch):
    text = load_error(
        tmp_path,
        monkeypatch,
        "kind: WebAcl\n"
        "rules:\n"
        "  - id: hdrs\n"
        "    priority: 1\n"
        "    action: block\n"
        "    statement:\n"
        "      byte_match: {field: {all_headers: {oversize: matches}}, value: x}\n"
        "  - id: cks\n"
        "    priority: 2\n"
        "    action: block\n"
        "    statement:\n"
        "      byte_match: {field: {cookies: {oversize: MATCH}}, value: x}\n",
    )
    expected = "expected one of: 'continue', 'match', 'no_match'"
    assert f"policies/waf.yaml:7:20: rules[0].statement.byte_match.field[0].all_headers.oversize: {expected}" in text
    assert f"policies/waf.yaml:12:20: rules[1].statement.byte_match.field[0].cookies.oversize: {expected}" in text


# -- through the gateway ----------------------------------------------------------------------------

GATEWAY_WAF = """
    kind: Plugin
    use: test_waf:WafPlugin
    config:
      rules:
        - {id: core, priority: 1, managed_group: core}
        - {id: no-script, priority: 2, action: block, statement: {byte_match: {field: all_headers, value: <script}}}
"""


def gateway_flow(headers: list[tuple[str, str]]) -> Any:
    req = tutils.treq(path=b"/items", headers=tuple((k.encode(), v.encode()) for k, v in headers), content=b"")
    f = tflow.tflow(req=req)
    f.client_conn.timestamp_tls_setup = None  # a plain-HTTP client
    return f


async def test_requests_beyond_the_byte_limit_are_forwarded_whole(make_gateway, backend):
    _, gate = make_gateway({"waf.yaml": GATEWAY_WAF, "api.yaml": "kind: Api\n"}, upstream=backend.url)
    # about 12 KB in 110 fields (the test backend, aiohttp, refuses more than 128 header fields)
    padding = [(f"x-pad-{i:03d}", f"{i:03d}" + "p" * 100) for i in range(110)]
    first = [("host", "api.example"), ("user-agent", "client/1.0")]
    f = await drive(gate, gateway_flow([*first, *padding, ATTACK, *pads(10, start=110)]))
    assert f.response.status_code == 200  # the attack lies beyond 8 KB: not inspected
    got = {k.lower(): v for k, v in backend.seen[-1]["headers"].items()}
    assert got["x-late"] == ATTACK[1]
    assert all(got[k] == v for k, v in padding + pads(10, start=110))  # every header, uncut
    details = [e["detail"] for e in f.metadata["sidegate"]["trace"] if e["plugin"] == "waf" and "detail" in e]
    detail = details[0]
    assert detail["phase"] == "headers"  # decided as soon as the headers are in
    assert not any(d["matches"] for d in details[1:])
    assert [(m["rule"], m["action"], m["field"]) for m in detail["matches"]] == [("waf/core-016", "count", "headers")]

    f = await drive(gate, gateway_flow([*first, ATTACK]))
    assert f.response.status_code == 403  # within the limit, the same header is blocked


def test_the_waf_leaves_the_request_headers_and_cookies_as_they_came():
    waf = make(
        rule("h", 1, contains("all_headers", "<script"), action="count"),
        rule("c", 2, contains("cookies", "<script"), action="count"),
    )
    cookies = cookie_header(250)[0][1]
    headers = [
        ("x-pad", "a" * 9000),
        ATTACK,
        *pads(210),
        ("cookie", "pad=" + "b" * 9000 + "; evil=<script>; " + cookies),
    ]
    ex = exchange(headers=headers)
    before = ex.request.headers.fields
    decision, details = run(waf, ex)
    assert decision is None and not any(d["matches"] for d in details)  # the parts beyond are not inspected
    assert ex.request.headers.fields == before  # nor cut
