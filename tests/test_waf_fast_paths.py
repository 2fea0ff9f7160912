"""The WAF's two shortcuts, the header-phase sweep and the per-value memo, change no verdict and do
save the work they claim to save."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils
from test_waf import exchange, make, rule, run

from addons.decision import Exchange
from addons.policy.policyset import empty_policy_set
from addons.waf import STATE_VAR, Waf, WebAclPolicy, statements
from addons.waf.managed import all_groups_policy

sys.path.insert(0, str(Path(__file__).resolve().parent / "waf_corpus"))

import corpus


def counting_acl() -> Waf:
    """Every managed group in count mode: each sample reports every rule that matches, not only
    the first block."""
    rules = [dict(r, override_action="count") for r in all_groups_policy()]
    return Waf(WebAclPolicy.model_validate({"kind": "WebAcl", "rules": rules}), "waf.yaml:1", enforced=True)


def matches(waf: Waf, sample: corpus.Sample) -> list[tuple[Any, ...]]:
    _, detail = corpus.decide(waf, sample)
    return [(m["rule"], m["field"], m["excerpt"]) for d in detail["phases"] for m in d.get("matches", [])]


def without_shortcuts(waf: Waf, monkeypatch: pytest.MonkeyPatch) -> None:
    for bank in waf.acl.banks:
        bank.sweep = bank.body = None
    detectors = [n for r in waf.acl.rules for n in statements.walk(r.node) if isinstance(n, statements.DetectorLeaf)]
    assert detectors
    for leaf in detectors:
        leaf._swept = False
    monkeypatch.setattr(statements.ValueMemo, "get", lambda self, text: None)


def test_sweep_and_memo_leave_every_match_of_the_corpus_unchanged(monkeypatch):
    samples = corpus.all_samples() + corpus.all_samples(heldout=True)
    fast = counting_acl()
    first = [matches(fast, s) for s in samples]
    again = [matches(fast, s) for s in samples]  # the memo now knows every value
    with monkeypatch.context() as m:
        plain = counting_acl()
        without_shortcuts(plain, m)
        expected = [matches(plain, s) for s in samples]
    assert sum(map(len, expected)) > 400  # the corpus does match, in many rules
    assert first == expected
    assert again == expected


def joined_rules() -> list[dict[str, Any]]:
    headers = {"all_headers": {"scope": "values", "exclude": ["cookie"]}}
    return [
        rule("ua", 1, {"regex": {"field": [{"header": "user-agent"}], "pattern": "sqlmap"}}),
        rule("hdr", 2, {"regex": {"field": [headers], "pattern": "evil-marker"}}),
        rule("seg", 3, {"regex": {"field": [{"path_segments": {}}], "pattern": "^admin$"}}),
        rule("ck", 4, {"regex": {"field": [{"cookies": {"scope": "values"}}], "pattern": "^evil$"}}),
        rule("qa", 5, {"regex": {"field": [{"all_query_args": {}}], "pattern": "^drop$"}}),
        # a second chain: a second bank over many values, so that the two share the sweep
        rule("lc", 6, {"regex": {"field": ["all_headers"], "pattern": "^never$", "transformations": ["lowercase"]}}),
    ]


def test_a_clean_request_is_searched_through_the_sweep_only():
    waf = make(*joined_rules())
    ex = exchange(headers=[("host", "api.example.com"), ("user-agent", "curl/8.5"), ("cookie", "a=evil-marker")])
    decision, _ = run(waf, ex)
    assert decision is None  # the cookie is excluded from "hdr": the sweep saw it, the bank did not
    view = ex.vars[STATE_VAR].ctx.view
    (bank,) = [b for b in waf.acl.banks if not b.chain]
    assert bank.sweep is not None and any(type(k) is tuple and k[0] == "sweep" for k in view.memo())
    assert bank.pipe.source in view._raw  # the sweep found the marker: the bank's own fields decided

    clean = exchange(headers=[("host", "api.example.com"), ("user-agent", "curl/8.5")])
    assert run(waf, clean)[0] is None
    view = clean.vars[STATE_VAR].ctx.view
    assert bank.pipe.source not in view._raw  # nothing in the sweep: the bank's fields never extracted


@pytest.mark.parametrize(
    ("path", "headers", "rule_id"),
    [
        ("/api/items", [("user-agent", "sqlmap/1.7")], "ua"),
        ("/api/items", [("x-note", "an evil-marker here")], "hdr"),
        ("/v1/admin/users", [], "seg"),
        ("/api/items", [("cookie", "a=1; b=evil")], "ck"),
        ("/api/items?x=drop&y=2", [], "qa"),
    ],
)
def test_the_sweep_keeps_what_a_bank_finds(path, headers, rule_id):
    decision, _ = run(make(*joined_rules()), path=path, headers=[("host", "h"), *headers])
    assert decision is not None and decision.response_type == "WAF_FILTERED" and decision.rule == rule_id


def test_beyond_the_header_limit_the_banks_read_their_own_fields():
    # the single header field sees a header past the 200 that all_headers (and the sweep) inspect
    waf = make(rule("late", 1, {"regex": {"field": [{"header": "x-late"}], "pattern": "^bad$"}}))
    headers = [("host", "h")] + [(f"x-h{i}", "v") for i in range(210)] + [("x-late", "bad")]
    decision, _ = run(waf, path="/", headers=headers)
    assert decision is not None and decision.rule == "late"


def test_a_value_seen_before_is_not_checked_again(monkeypatch):
    checked: list[str] = []
    real = statements.detect.is_xss
    monkeypatch.setattr(statements.detect, "is_xss", lambda t: checked.append(t) or real(t))
    waf = make(rule("x", 1, {"xss": {"field": [{"all_query_args": {}}], "transformations": ["url_decode"]}}))
    assert run(waf, path="/?q=%3Cb%3Ehi%3C/b%3E&r=1")[0] is None
    first = list(checked)
    assert "<b>hi</b>" in first and "1" in first
    assert run(waf, path="/?q=%3Cb%3Ehi%3C/b%3E&r=1")[0] is None
    assert checked == first  # nothing checked again
    assert run(waf, path="/?q=%3Cb%3Ehi%3C/b%3E&r=2")[0] is None
    again = checked[len(first) :]
    assert "2" in again and "<b>hi</b>" not in again
    blocked, details = run(waf, path="/?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert blocked is not None and details[0]["matches"][0]["field"] == "query_arg:q"
    assert run(waf, path="/?q=%3Cscript%3Ealert(1)%3C/script%3E")[0] is not None  # remembered as a hit


def test_a_per_value_bank_remembers_each_raw_value(monkeypatch):
    searched: list[bytes] = []
    real = statements.search_bytes
    monkeypatch.setattr(statements, "search_bytes", lambda rx, data: searched.append(data) or real(rx, data))
    statement = {
        "regex": {
            "field": [{"all_query_args": {}}],
            "pattern": r"\Acat/etc",
            "transformations": ["url_decode", "cmd_line"],
        }
    }
    waf = make(rule("cmd", 1, statement))
    assert not waf.acl.banks[0].joined
    assert run(waf, path="/?a=1&b=ok")[0] is None
    assert len(searched) == 2
    assert run(waf, path="/?a=1&b=ok")[0] is None
    assert len(searched) == 2
    decision, details = run(waf, path="/?a=1&c=c%5Eat%20/etc/passwd")
    assert decision is not None and details[0]["matches"][0]["field"] == "query_arg:c"
    assert len(searched) == 3  # only the new value


def test_the_memo_is_bounded():
    memo = statements.ValueMemo(size=3)
    for i in range(3):
        memo.put(f"v{i}", i)
    assert len(memo) == 3 and memo.get("v2") == 2
    memo.put("v3", 3)  # full: it starts over
    assert len(memo) == 1 and memo.get("v0") is None and memo.get("v3") == 3
    memo.put("x" * (statements.MEMO_MAX_LEN + 1), True)
    assert memo.get("x" * (statements.MEMO_MAX_LEN + 1)) is None


def size_rule(comparison: str, size: int) -> dict[str, Any]:
    statement = {"size_constraint": {"field": {"header": "x-data"}, "comparison": comparison, "size": size}}
    return rule("big", 1, statement)


@pytest.mark.parametrize(
    ("comparison", "size", "value", "blocked"),
    [
        ("gt", 10, b"a" * 11, True),
        ("gt", 10, b"a" * 10, False),
        ("ge", 10, b"a" * 10, True),
        ("ge", 11, b"a" * 10, False),
        ("gt", 10, b"\xff" * 4, True),  # four invalid bytes read as four U+FFFD: 12 bytes of UTF-8
        ("gt", 12, b"\xff" * 4, False),
    ],
)
def test_larger_than_is_exact_at_the_bound(comparison, size, value, blocked):
    waf = make(size_rule(comparison, size))
    h = http.Headers([(b"host", b"h"), (b"x-data", value)])
    f = tflow.tflow(req=tutils.treq(method=b"GET", path=b"/", headers=h, content=b""))
    ex = Exchange(f, empty_policy_set())
    assert (waf.method_request(ex) is not None) is blocked


def test_a_small_request_is_not_measured_value_by_value():
    waf = make(size_rule("gt", 4096))
    ex = exchange(headers=[("host", "h"), ("x-data", "small")])
    assert run(waf, ex)[0] is None
    view = ex.vars[STATE_VAR].ctx.view
    assert view.size_bound() < 4096 and not view._values  # no field was extracted
    big = exchange(headers=[("host", "h"), ("x-data", "a" * 5000)])
    assert run(waf, big)[0] is not None


def test_a_bank_over_single_values_reads_them_without_the_sweep():
    narrow = rule("cl", 1, {"regex": {"field": [{"header": "content-length"}], "pattern": "[^0-9]"}})
    waf = make(narrow)
    assert waf.acl.banks[0].sweep is None and waf.acl.banks[0].body is None
    assert run(waf, method="POST", headers=[("host", "h"), ("content-length", "2")], body=b"ok")[0] is None


@pytest.mark.parametrize(
    ("header", "body", "blocked"), [("evil", b"fine", True), ("fine", b"evil", True), ("ok", b"", False)]
)
def test_a_bank_over_a_single_header_and_the_body_reads_both(header, body, blocked):
    statement = {"regex": {"field": [{"header": "x-a"}, {"body": {}}], "pattern": "evil"}}
    waf = make(rule("hb", 1, statement))
    decision, _ = run(waf, method="POST", headers=[("host", "h"), ("x-a", header)], body=body)
    assert (decision is not None) is blocked


def test_a_single_bank_reads_its_own_fields():
    statement = {"regex": {"field": ["all_query_args", {"header": "user-agent"}], "pattern": "badword"}}
    waf = make(rule("one", 1, statement))
    assert waf.acl.banks[0].sweep is None
    assert run(waf, path="/?q=badword")[0] is not None


def test_a_clean_request_is_cleared_by_the_detectors_without_extracting_their_fields():
    statement = {"sqli": {"field": [{"all_query_args": {}}, {"all_headers": {}}], "transformations": ["url_decode"]}}
    waf = make(rule("sq", 1, statement))
    ex = exchange(path="/items?q=shoes&page=2", headers=[("host", "h"), ("user-agent", "curl/8.5")])
    assert run(waf, ex)[0] is None
    assert not ex.vars[STATE_VAR].ctx.view._values  # decided on the sweep's values alone
    blocked, details = run(waf, path="/items?q=1%27%20OR%20%271%27%3D%271&page=2")
    assert blocked is not None and details[0]["matches"][0]["field"] == "query_arg:q"
