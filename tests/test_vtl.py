"""The mapping-template engine: compile errors, render errors, limits, overrides and Velocity semantics.

Sandboxing has its own module, ``test_vtl_sandbox.py``; documented examples are in ``test_vtl_cases.py``.
"""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from addons.vtl import (
    InvalidPayloadError,
    Limits,
    RenderContext,
    RenderResult,
    Template,
    TemplateError,
    TemplateLimitError,
    compile_template,
)
from addons.vtl.errors import Abort
from addons.vtl.jsonpath import MISSING, compile_path, evaluate
from addons.vtl.values import java_double
from addons.vtl.variables import escape_javascript, url_encode

SOURCE = "policies/api.yaml:12"


def render(text: str, *, limits: Limits | None = None, **context: Any) -> str:
    template = compile_template(text, source=SOURCE, limits=limits or Limits())
    return template.render(RenderContext(**context)).text


def fails(text: str, **context: Any) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        render(text, **context)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Compilation


def test_syntax_error_names_source_and_template_line() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template('{\n  "a": 1,\n  #if($x)\n  "b": 2\n}', source=SOURCE)
    err = caught.value
    assert err.reason == "template_invalid"
    assert err.line == 5
    assert str(err).startswith(f"{SOURCE}: template line 5: syntax error")
    assert "#end" in err.problem


def test_template_of_exactly_300_kb_compiles_and_one_byte_more_does_not() -> None:
    compile_template("x" * 300 * 1024, source=SOURCE)
    with pytest.raises(TemplateError, match=r"307201 bytes; API Gateway's limit is 307200 bytes") as caught:
        compile_template("x" * (300 * 1024 + 1), source=SOURCE)
    assert caught.value.reason == "template_invalid"


def test_template_size_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(TemplateError, match="limit is 307200 bytes"):
        compile_template("é" * (150 * 1024 + 1), source=SOURCE)


@pytest.mark.parametrize(
    ("text", "directive"),
    [
        ("ok\n#macro(twice $x)$x$x#end", "#macro"),
        ("ok\n#evaluate('$x')", "#evaluate"),
        ("ok\n#include('/etc/passwd')", "#include"),
        ("ok\n#parse('other.vtl')", "#parse"),
        ("ok\n#set($m = {})#return($m)", "#return"),
    ],
)
def test_directives_api_gateway_lacks_are_load_errors(text: str, directive: str) -> None:
    with pytest.raises(TemplateError, match=f"{directive} is not supported") as caught:
        compile_template(text, source=SOURCE)
    assert caught.value.line == 2


def test_define_with_arguments_is_a_load_error() -> None:
    with pytest.raises(TemplateError, match="#define takes no arguments"):
        compile_template("#define($block $arg)x#end", source=SOURCE)


def test_deeply_nested_template_is_an_error_not_a_crash() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("#if(true)" * 3000 + "x" + "#end" * 3000, source=SOURCE)
    assert caught.value.reason == "template_invalid"


def test_call_of_an_undefined_macro_prints_as_written() -> None:
    assert render("color #hex(12) and #foo($x)!") == "color #hex(12) and #foo($x)!"


def test_compiled_template_is_reused_across_renders() -> None:
    template = compile_template("#set($seen = \"$!seen+\")$seen $input.params('n')", source=SOURCE)
    outputs = [template.render(RenderContext(query_params={"n": str(i)})).text for i in range(50)]
    assert outputs == [f"+ {i}" for i in range(50)]
    assert isinstance(template, Template)
    assert template.source == SOURCE


def test_concurrent_renders_keep_their_own_budgets() -> None:
    template = compile_template("#foreach($i in [1..600])#end$input.params('n')", source=SOURCE)
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = list(pool.map(lambda n: template.render(RenderContext(query_params={"n": str(n)})).text, range(40)))
    assert outputs == [str(n) for n in range(40)]


# ---------------------------------------------------------------------------------------------
# Render errors: line numbers, reason codes, and never request data


def test_render_error_names_line_and_hides_the_payload() -> None:
    err = fails('{\n  "token": "$input.body",\n  "raw": "$util.base64Decode($input.body)"\n}', body="s3cret-t0ken!!")
    assert err.reason == "template_failed"
    assert err.line == 3
    assert "base64Decode" in str(err)
    assert "s3cret" not in str(err)
    assert err.__cause__ is None and err.__suppress_context__


def test_runtime_error_from_java_method_reports_line() -> None:
    err = fails("a\n#set($s = $input.body)\n$s.substring(2, 99)", body="private-value")
    assert err.line == 3
    assert "substring" in str(err)
    assert "private" not in str(err)


def test_payload_that_looks_like_json_but_is_not_is_a_400_class_error() -> None:
    with pytest.raises(InvalidPayloadError) as caught:
        render("$input.path('$.a')", body='{"a": "leaked-secret"')
    assert caught.value.reason == "invalid_payload"
    assert "leaked-secret" not in str(caught.value)


def test_payload_is_only_parsed_when_a_template_needs_it() -> None:
    assert render("$input.body", body="{not json") == "{not json"


def test_unsupported_jsonpath_does_not_echo_the_path() -> None:
    err = fails("$input.path($input.params('p'))", query_params={"p": "$[?(@.password)]"}, body="{}")
    assert "unsupported JSONPath" in str(err)
    assert "password" not in str(err)


def test_unsupported_regex_does_not_echo_the_pattern() -> None:
    err = fails("$input.body.replaceAll($input.params('p'), 'x')", body="abc", query_params={"p": "(?=hunter2)"})
    assert "RE2" in str(err)
    assert "hunter2" not in str(err)


def test_unexpected_python_error_is_reported_by_type_and_template_text_only() -> None:
    err = fails("#set($m = {})\n#set($m[[1]] = 'x')")
    assert err.line == 2
    assert "#set" in str(err) or "map keys" in str(err)


# ---------------------------------------------------------------------------------------------
# Limits


def test_one_thousand_foreach_iterations_are_allowed() -> None:
    assert render("#foreach($i in [1..1000])#end$velocityCount.") == "."


def test_the_1001st_foreach_iteration_fails() -> None:
    err = fails("x\n#foreach($i in [1..1001])#end")
    assert isinstance(err, TemplateLimitError)
    assert err.reason == "template_limit"
    assert err.line == 2
    assert "1000 #foreach iterations" in str(err)


def test_iteration_budget_is_a_total_over_all_loops_of_one_render() -> None:
    template = compile_template("#foreach($i in [1..600])#end#foreach($i in [1..600])#end", source=SOURCE)
    with pytest.raises(TemplateLimitError):
        template.render(RenderContext())
    nested = compile_template("#foreach($a in [1..40])#foreach($b in [1..30])#end#end", source=SOURCE)
    with pytest.raises(TemplateLimitError):
        nested.render(RenderContext())


def test_iteration_budget_resets_for_each_render() -> None:
    template = compile_template("#foreach($i in [1..700])#end ok", source=SOURCE)
    assert [template.render(RenderContext()).text for _ in range(3)] == [" ok"] * 3


def test_render_deadline_is_checked_in_loops() -> None:
    ticks = itertools.count()
    template = compile_template("#foreach($i in [1..100])$i#end", source=SOURCE, limits=Limits(max_render_seconds=1.0))
    with pytest.raises(TemplateLimitError, match=r"longer than 1 s"):
        template.render(RenderContext(), clock=lambda: next(ticks) * 0.25)


def test_render_deadline_applies_to_define_blocks() -> None:
    ticks = itertools.count()
    text = "#define($b)x#end" + "$b" * 50
    template = compile_template(text, source=SOURCE, limits=Limits(max_render_seconds=1.0))
    with pytest.raises(TemplateLimitError):
        template.render(RenderContext(), clock=lambda: next(ticks) * 0.1)


def test_output_size_is_bounded() -> None:
    with pytest.raises(TemplateLimitError, match="grew past 1000 characters"):
        render("$input.body$input.body", body="x" * 600, limits=Limits(max_output_chars=1000))


def test_string_doubling_is_stopped_before_memory_runs_out() -> None:
    err = fails('#set($s = "ab")#foreach($i in [1..60])#set($s = "$s$s")#end')
    assert isinstance(err, TemplateLimitError)


def test_replace_all_blowup_is_stopped() -> None:
    text = "#set($s = 'abcdefgh')" + "#set($s = $s.replaceAll('', $s))" * 12
    with pytest.raises(TemplateLimitError):
        render(text)


def test_huge_range_is_refused_without_building_it() -> None:
    err = fails("#foreach($i in [1..1000000000])#end")
    assert isinstance(err, TemplateLimitError)
    assert "100000 items" in str(err)


def test_lists_a_template_builds_are_bounded() -> None:
    with pytest.raises(TemplateLimitError, match="10 items"):
        render("#set($l = [])#foreach($i in [1..11])#set($x = $l.add($i))#end", limits=Limits(max_collection_items=10))


def test_integer_growth_is_bounded() -> None:
    with pytest.raises(TemplateLimitError, match="integer grew too large"):
        render("#set($n = 3)#foreach($i in [1..20])#set($n = $n * $n)#end")


def test_self_referencing_define_is_stopped() -> None:
    with pytest.raises(TemplateLimitError, match="recurses"):
        render("#define($loop)$loop#end$loop")


# ---------------------------------------------------------------------------------------------
# $context overrides


def result_of(text: str, **context: Any) -> RenderResult:
    return compile_template(text, source=SOURCE).render(RenderContext(**context))


def test_request_overrides_cover_header_querystring_and_path() -> None:
    result = result_of(
        "#set($context.requestOverride.header.X-Trace = 'abc')"
        "#set($context.requestOverride.querystring.page = 2)"
        "#set($context.requestOverride.querystring.tag = ['a', 'b'])"
        "#set($context.requestOverride.path.id = $input.params('id'))",
        path_params={"id": "b7"},
    )
    assert result.text == ""
    assert dict(result.request_override.header) == {"X-Trace": ("abc",)}
    assert dict(result.request_override.querystring) == {"page": ("2",), "tag": ("a", "b")}
    assert dict(result.request_override.path) == {"id": "b7"}
    assert result.response_override.status is None


def test_response_override_header_and_status_read_back() -> None:
    result = result_of(
        "#set($context.responseOverride.header.Access-Control-Allow-Origin = 'https://app.example')"
        "#set($context.responseOverride.status = 418)"
        "$context.responseOverride.status"
    )
    assert result.text == "418"
    assert result.response_override.status == 418
    assert dict(result.response_override.header) == {"Access-Control-Allow-Origin": ("https://app.example",)}


@pytest.mark.parametrize(
    ("value", "status"), [("'404'", 404), ("' 201 '", 201), ("'abc'", None), ("700", None), ("99", None)]
)
def test_status_override_must_be_an_http_status(value: str, status: int | None) -> None:
    assert result_of(f"#set($context.responseOverride.status = {value})").response_override.status == status


def test_each_override_may_be_set_once() -> None:
    with pytest.raises(TemplateError, match="overridden twice"):
        result_of("#set($context.responseOverride.status = 400)\n#set($context.responseOverride.status = 500)")
    with pytest.raises(TemplateError, match="overridden twice"):
        result_of("#set($context.requestOverride.header.a = 1)#set($x = $context.requestOverride.header.put('a', 2))")


def test_override_maps_cannot_be_replaced_whole() -> None:
    with pytest.raises(TemplateError, match="cannot be replaced"):
        result_of("#set($context.requestOverride.header = {})")


def test_overrides_set_by_an_earlier_template_are_readable_but_not_reported_again() -> None:
    result = result_of(
        "$context.requestOverride.header.X-From-Request|$context.responseOverride.status",
        context={"requestOverride": {"header": {"X-From-Request": "yes"}}, "responseOverride": {"status": 202}},
    )
    assert result.text == "yes|202"
    assert dict(result.request_override.header) == {}
    assert result.response_override.status is None


# ---------------------------------------------------------------------------------------------
# Velocity semantics as API Gateway runs them


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#if($missing)T#else F#end", "T"),  # null becomes "", which Velocity 1.7 counts as true
        ("#if(!$missing)T#else F#end", " F"),
        ("#if($input.path('$.off'))T#else F#end", " F"),
        ("#if($input.path('$.off') == false)T#end", "T"),
        ("#if($input.params('q') != '')has#else none#end", " none"),
        ("#if(1 == '1')same#end", "same"),  # different types compare by toString()
        ("#if($input.path('$.n') == 3)three#end", "three"),
        ("#if(null)T#else F#end", " F"),
    ],
)
def test_conditions(text: str, expected: str) -> None:
    assert render(text, body='{"off": false, "n": 3}') == expected


def test_and_or_short_circuit() -> None:
    assert render("#set($s = 'ab')#if($s.length() > 5 && $s.substring(0, 5) == 'x')bad#else ok#end") == " ok"
    assert render("#set($s = 'ab')#if($s.length() < 5 || $s.substring(0, 5) == 'x')ok#end") == "ok"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#set($x = 7 / 2)$x", "3"),
        ("#set($x = -7 / 2)$x", "-3"),  # Java truncates toward zero
        ("#set($x = -7 % 3)$x", "-1"),
        ("#set($x = 7.5 / 2)$x", "3.75"),
        ("#set($x = 100.0 / 50)$x", "2.0"),
        ("#set($x = 1 / 0)[$x]", "[]"),  # Velocity yields null
        ("#set($x = 2 + 3 * 4)$x", "14"),
        ("#set($x = (2 + 3) * 4)$x", "20"),
        ("#set($x = 'n=' + 5)$x", "n=5"),
        ("$util.parseJson('10000000.0') $util.parseJson('0.0001') $util.parseJson('123.0')", "1.0E7 1.0E-4 123.0"),
    ],
)
def test_arithmetic_and_number_printing(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$s.length() $s.toUpperCase() $s.trim().length()", "12  HELLO, BOB  10"),
        ("$s.replaceAll('(\\w+), (\\w+)', '$2 $1')", " Bob Hello "),
        ("$s.replace('l', 'L') $s.indexOf('o') $s.lastIndexOf('o') $s.indexOf('zz')", " HeLLo, Bob  5 9 -1"),
        ("$s.contains('Bob') $s.startsWith(' He') $s.endsWith('x') $s.matches('.*Bob.*')", "true true false true"),
        ("$s.trim().split(',\\s*') $s.trim().split(',\\s*').size()", "[Hello, Bob] 2"),
        ("#set($csv = 'a,b,,c,,')$csv.split(',')", "[a, b, , c]"),
        ("$s.charAt(1)$s.substring(1, 3)", "HHe"),
        ("$s.equals(' Hello, Bob ') $s.equalsIgnoreCase(' HELLO, BOB ') $s.isEmpty()", "true true false"),
        ("$s.noSuchMethod() $s.length(1)", " "),
    ],
)
def test_string_methods(text: str, expected: str) -> None:
    assert render("#set($s = ' Hello, Bob ')" + text) == expected


def test_list_and_map_methods() -> None:
    text = (
        "#set($l = [3, 1])#set($ok = $l.add(2))$ok $l $l.size() $l.get(0) $l.contains(1) $l.indexOf(2) $l.subList(1, 3) "
        "#set($m = {'a': 1})#set($old = $m.put('a', 5))$old $m.put('b', 'x') $m $m.keySet() $m.values() "
        "$m.containsKey('b') $m.size() $m.isEmpty() $m.remove('b') $m"
    )
    assert render(text) == "true [3, 1, 2] 3 3 true 2 [1, 2] 1  {a=5, b=x} [a, b] [5, x] true 2 false x {a=5}"


def test_foreach_iterates_map_values_and_entry_sets() -> None:
    text = "#set($m = {'a': 1, 'b': 'two'})#foreach($v in $m)$v;#end #foreach($e in $m.entrySet())$e.key=$e.value;#end"
    assert render(text) == "1;two; a=1;b=two;"


def test_foreach_variables_and_set_scoping() -> None:
    text = (
        "#set($i = 'outer')"
        "#foreach($i in ['x', 'y', 'z'])$foreach.index$foreach.count$foreach.first$foreach.last,#set($last = $i)#end"
        " $i $last [$!velocityCount]"
    )
    assert render(text) == "01truefalse,12falsefalse,23falsetrue, outer z []"


def test_string_literals_keep_backslashes_as_written() -> None:
    # AWS does not unescape \n in VTL literals; "" inside "..." is a quote; '...' does not interpolate.
    assert (
        render('#set($s = "a\\nb")$s $s.length() #set($q = "say ""hi""")$q #set($r = \'$s\')$r')
        == 'a\\nb 4 say "hi" $s'
    )


def test_stop_ends_the_output() -> None:
    assert render("before#stop after") == "before"


def test_define_renders_in_the_current_scope() -> None:
    assert render("#define($row)[$foreach.index]#end#foreach($x in [1, 2, 3])$row#end $row()") == "[0][1][2] []()"


def test_printing_of_values_built_by_the_template() -> None:
    assert render(
        "#set($l = [1, 'a', true])$l #set($m = {'k': [1, 2]})$m $input.path('$.x')", body='{"x": [1, "a"]}'
    ) == ('[1, a, true] {k=[1, 2]} [1,"a"]')


def test_input_json_of_missing_paths() -> None:
    assert render("[$input.json('$.nope')] $input.json('$.list[*].nope')", body='{"list": [{"a": 1}]}') == "[] []"


def test_writes_to_context_and_stage_variables_stay_inside_the_render() -> None:
    context = {"identity": {"sourceIp": "203.0.113.9"}}
    stage = {"table": "books"}
    template = compile_template(
        "#set($context.identity.sourceIp = 'spoofed')#set($stageVariables.table = 'other')"
        "#set($x = $input.params().header.put('h', 'v'))"
        "$context.identity.sourceIp $stageVariables.table $input.params('h')",
        source=SOURCE,
    )
    headers: dict[str, str] = {}
    for _ in range(2):
        out = template.render(RenderContext(context=context, stage_variables=stage, header_params=headers))
        assert out.text == "spoofed other "
    assert context == {"identity": {"sourceIp": "203.0.113.9"}}
    assert stage == {"table": "books"}
    assert headers == {}


def test_payload_documents_are_not_shared_between_renders() -> None:
    template = compile_template(
        "#set($d = $input.path('$'))#set($x = $d.put('seen', true))$input.json('$')", source=SOURCE
    )
    body = '{"a": 1}'
    assert template.render(RenderContext(body=body)).text == '{"a":1,"seen":true}'
    assert template.render(RenderContext(body=body)).text == '{"a":1,"seen":true}'


def test_bytes_body_is_decoded_as_utf8() -> None:
    assert render("$input.path('$.t')", body='{"t": "Grüße"}'.encode()) == "Grüße"


def test_json_arrays_inside_maps_print_as_json() -> None:
    body = json.dumps({"a": "x", "b": [{"c": True}], "d": None})
    assert render("$input.path('$')", body=body) == '{a=x, b=[{"c":true}], d=null}'


# ---------------------------------------------------------------------------------------------
# Helpers, tested alone


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", {"a": {"b": [10, 20, {"c": "deep"}]}, "x y": 1}),
        ("$.a.b[0]", 10),
        ("$.a.b[-1].c", "deep"),
        ("$['a']['b'][1]", 20),
        ('$["x y"]', 1),
        ("$.a.b[*]", [10, 20, {"c": "deep"}]),
        ("$..c", ["deep"]),
        ("$.a.*", [[10, 20, {"c": "deep"}]]),
        ("$.a.missing", MISSING),
        ("$.a.b[9]", MISSING),
        ("", {"a": {"b": [10, 20, {"c": "deep"}]}, "x y": 1}),
    ],
)
def test_jsonpath_subset(path: str, expected: object) -> None:
    document = {"a": {"b": [10, 20, {"c": "deep"}]}, "x y": 1}
    assert evaluate(compile_path(path), document) == expected


@pytest.mark.parametrize("path", ["a.b", "$.a[?(@.b)]", "$.a[0:2]", "$.a.length()x[", "$[", "$.", "$..", "$['a"])
def test_jsonpath_rejects_what_it_does_not_support(path: str) -> None:
    with pytest.raises(Abort, match="unsupported JSONPath"):
        compile_path(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("it's", "it\\'s"),
        ('a"b\\c/d', 'a\\"b\\\\c\\/d'),
        ("tab\there\r\n\f\b\x01", "tab\\there\\r\\n\\f\\b\\u0001"),
        ("é€😀", "\\u00E9\\u20AC\\uD83D\\uDE00"),
        ("plain ascii", "plain ascii"),
    ],
)
def test_escape_javascript_matches_commons_lang(text: str, expected: str) -> None:
    assert escape_javascript(text) == expected


def test_url_encode_matches_java_url_encoder() -> None:
    assert url_encode("a b~c*d_e.f-g") == "a+b%7Ec*d_e.f-g"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1.0"),
        (0.001, "0.001"),
        (0.0001, "1.0E-4"),
        (9999999.0, "9999999.0"),
        (1e7, "1.0E7"),
        (-2.5e-5, "-2.5E-5"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_java_double_to_string(value: float, text: str) -> None:
    assert java_double(value) == text
