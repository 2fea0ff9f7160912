"""Templates reach API Gateway's variables and nothing else: no Python attributes, environment, files or imports.

Every trick either renders as empty (Velocity's null) or is refused at load time; none may print
anything that came from Python (a repr, a class name, a module, an environment value).
"""

from __future__ import annotations

from typing import Any

import pytest

from addons.vtl import RenderContext, TemplateError, compile_template
from addons.vtl.members import call_method, get_index, get_property
from addons.vtl.values import CowMap, JavaList, MapEntry, SandboxMap, SandboxObject
from addons.vtl.variables import UTIL, InputVariable

CANARY = "canary-7d1e-value"
LEAK_MARKERS = ("<", "class", "module", "built-in", "function", "object at", "__", "airspeed", "addons", CANARY)

CONTEXT = RenderContext(
    body='{"pets": [{"name": "rex"}], "secretless": true}',
    path_params={"id": "1"},
    query_params={"q": "x"},
    header_params={"Host": "example.com"},
    context={"requestId": "r-1", "identity": {"sourceIp": "192.0.2.1"}},
    stage_variables={"table": "books"},
)

TRICKS = [
    "$input.getClass()",
    "$input.class",
    "$input.getClass().forName('java.lang.Runtime').getRuntime().exec('id')",
    "$input.__class__",
    "$input.__class__.__mro__",
    "$input.__init__.__globals__",
    "$input.__dict__",
    "$input.__slots__",
    "$input._body",
    "$input.document()",
    "$input._sources",
    "$input.vtl_call('params', [])",
    "$util.__dict__",
    "$util.__class__.__init__.__globals__",
    "$util.__class__.__base__.__subclasses__()",
    "$util.getClass().getClassLoader()",
    "$context.__init__.__globals__",
    "$context.__class__.__bases__",
    "$context._base",
    "$context._over",
    "$context.get.__self__",
    "$stageVariables.__getitem__('table')",
    "$stageVariables.__class__",
    "#set($s = '')$s.__class__.__mro__[1].__subclasses__()",
    "#set($s = '')$s.__class__.__mro__.get(1).__subclasses__()",
    "#set($s = 'x')$s.format('{0.__class__}')",
    "#set($s = 'x')$s.__add__('y') $s.encode() $s.__len__()",
    "#set($l = [])$l.__class__.__subclasses__()",
    "#set($l = [1])$l.__iter__() $l.pop() $l.__getitem__(0) $l.copy() $l.clear()",
    "#set($m = {})$m.__class__ $m.items() $m.update({'a': 1}) $m.fromkeys([1]) $m.copy() $m.setdefault('k', 1)",
    "#set($n = 5)$n.__class__ $n.real $n.bit_length() $n.__add__(1) $n.numerator",
    "#set($b = true)$b.__class__ $b.real",
    "$input.path('$').__class__ $input.path('$').pop('pets') $input.path('$').keys()",
    "$input.path('$.pets').__class__ $input.path('$.pets').append(1)",
    "#foreach($x in [1])$foreach.__class__ $foreach.items()#end",
    "#foreach($e in $input.params().entrySet())$e.__class__ $e.__slots__#end",
    "$env",
    "$env.HOME",
    "$os.environ",
    "$System.getenv('SIDEGATE_VTL_CANARY')",
    "$util.getenv('SIDEGATE_VTL_CANARY')",
    "$input.getenv('SIDEGATE_VTL_CANARY')",
    "$__import__('os').environ",
    "$__builtins__",
    "$builtins.open('/etc/passwd').read()",
    "$open('/etc/passwd')",
    "$sys.modules",
    "$LocalNamespace $_Element $NullLoader $Template",
    "${input.__class__}",
    "$!input.__class__",
    "$input['__class__'] $util['__dict__'] $context['__class__']",
]


@pytest.mark.parametrize("trick", TRICKS)
def test_trick_reaches_nothing(trick: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDEGATE_VTL_CANARY", CANARY)
    out = compile_template(trick, source="sandbox").render(CONTEXT).text
    for marker in LEAK_MARKERS:
        assert marker not in out, f"{trick!r} printed {out!r}"
    assert out.replace("{}", "").strip() == "", f"{trick!r} printed {out!r}"


def test_caller_data_is_unchanged_by_python_method_names() -> None:
    template = compile_template(
        "$input.path('$').clear()$input.path('$').pop('pets')$input.json('$')", source="sandbox"
    )
    assert template.render(CONTEXT).text == '{"pets":[{"name":"rex"}],"secretless":true}'


@pytest.mark.parametrize(
    "text",
    [
        "#include('/etc/passwd')",
        "#parse('/etc/passwd')",
        "#evaluate('$input.__class__')",
        "#macro(x)#end",
    ],
)
def test_file_and_dynamic_code_directives_are_refused_at_load(text: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(text, source="sandbox")
    assert caught.value.reason == "template_invalid"


def test_data_keys_named_like_python_attributes_are_just_data() -> None:
    body = '{"__class__": "not python", "__dict__": {"k": "v"}}'
    out = compile_template("$input.path('$').__class__|$input.path('$.__dict__').k", source="s").render(
        RenderContext(body=body)
    )
    assert out.text == "not python|v"


DANGEROUS = [
    "__class__",
    "__dict__",
    "__init__",
    "__globals__",
    "__subclasses__",
    "__mro__",
    "__reduce__",
    "__reduce_ex__",
    "__getattribute__",
    "__setattr__",
    "__getitem__",
    "__call__",
    "mro",
    "format",
    "format_map",
    "encode",
    "keys",
    "items",
    "pop",
    "update",
    "append",
    "clear",
    "copy",
    "vtl_call",
    "vtl_property",
    "document",
    "_base",
    "_over",
    "put_all",
    "getClass",
    "class",
]


def targets() -> list[Any]:
    return [
        "text",
        5,
        2.5,
        True,
        [1],
        JavaList([1]),
        {},
        CowMap({}),
        MapEntry("k", "v"),
        InputVariable("{}", {}, {}, {}),
        UTIL,
    ]


@pytest.mark.parametrize("name", DANGEROUS)
def test_member_tables_have_no_python_members(name: str) -> None:
    for target in targets():
        assert call_method(target, name, []) is None, (type(target).__name__, name)
        assert call_method(target, name, ["a"]) is None, (type(target).__name__, name)
        assert get_property(target, name) is None, (type(target).__name__, name)
        assert get_index(target, name) is None, (type(target).__name__, name)


ALLOWED_TYPES = (type(None), bool, int, float, str, list, dict, JavaList, SandboxMap, SandboxObject, MapEntry)


def test_every_allowed_method_returns_sandbox_values() -> None:
    samples: dict[str, list[tuple[str, list[Any]]]] = {
        "text": [("length", []), ("split", [","]), ("toString", []), ("substring", [1]), ("replaceAll", ["e", "E"])],
        "list": [("subList", [0, 1]), ("get", [0]), ("toString", []), ("size", [])],
        "map": [("keySet", []), ("values", []), ("entrySet", []), ("get", ["a"]), ("toString", [])],
    }
    values: dict[str, Any] = {"text": "t,e,x,t", "list": JavaList([1, "a"]), "map": {"a": [1]}}
    for kind, calls in samples.items():
        for name, args in calls:
            result: Any = call_method(values[kind], name, args)
            items = list(result) if isinstance(result, list) else []
            assert isinstance(result, ALLOWED_TYPES), (kind, name, type(result))
            assert all(isinstance(item, ALLOWED_TYPES) for item in items)


def test_pipeline_objects_are_converted_on_the_way_in() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

        secret = "attribute"

    context = RenderContext(context={"thing": Opaque(), "nested": {"list": (1, Opaque())}})
    out = compile_template(
        "$context.thing.secret|$context.nested.list.get(1).secret|$context.nested.list.size()", source="s"
    )
    assert out.render(context).text == "||2"
