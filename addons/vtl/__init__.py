"""API Gateway mapping templates (VTL). Checkpoints: integration request, integration response.

Policy files hold the template text; the policy loader calls :func:`compile_template` once per
load (a bad template becomes a ``file:line`` policy error) and the pipeline calls
:meth:`Template.render` per request with a :class:`RenderContext`. The result carries the output
text and any ``$context.requestOverride`` / ``$context.responseOverride`` values the template set.
Nothing outside this package imports the template engine.

Engine
------
``airspeed-ext==0.6.9`` (imported as ``airspeed``), pinned exactly. It and upstream ``airspeed``
install the same module; we chose the fork because it is maintained for parity with *AWS's*
Velocity (LocalStack runs API Gateway and AppSync templates on it, and its tests are snapshots
recorded against AWS): string literals keep backslashes as written, ``""`` escapes a quote inside
``"..."``, ``#set`` assigns through dotted and bracketed paths with hyphenated names
(``#set($context.responseOverride.header.X-Trace = ...)``; upstream's ``#set`` cannot), and
missing references print as nothing. Upstream ``airspeed`` follows Java Velocity instead (prints
``$missing`` literally, unescapes ``\\n`` in literals). The fork is an sdist that pulls in ``six``
and ``cachetools``; it is pure Python. Whichever engine, airspeed resolves ``$a.b`` with
``getattr`` on live Python objects, so ``_engine.py`` rewires every lookup, loop and operator of the
parsed tree to our own code (``members.py`` is the allow-list); no Python object, attribute,
environment variable, file or import is reachable from a template.

Limits
------
Template size 300 KB (API Gateway's quota, checked at compile), 1,000 ``#foreach`` iterations per
render in total (API Gateway's quota), a render deadline (0.5 s), and a 10 MB bound on the output and
on any string the template builds; lists and maps a template builds stop at 100,000 items. Failures
raise :class:`TemplateError` (``reason`` ``template_failed``), :class:`TemplateLimitError`
(``template_limit``) or :class:`InvalidPayloadError` (``invalid_payload``: the body looks like JSON
but is not, which API Gateway answers with 400); messages name the template line, never request data.

Known differences from API Gateway
----------------------------------
Behaviour marked *unverified* follows the best public evidence (AWS documentation, LocalStack's
AWS-recorded snapshots) but was not observed on AWS by us.

* ``#macro``, ``#evaluate``, ``#include``, ``#parse`` and ``#return`` are compile errors here. AWS
  silently ignores a ``#macro`` definition and prints calls of it literally; we print calls of
  undefined macros literally too, but refuse the definition so the mistake shows at load time.
* Truthiness is Velocity 1.7's: only null and ``false`` are false. Because API Gateway turns a
  missing value into empty text, ``#if($missing)`` is *true* (as on AWS); test with
  ``#if($x != "")``. ``&&`` and ``||`` short-circuit.
* ``$input.json(x)`` on a path that matches nothing prints nothing, an indefinite path
  (``[*]``, ``..name``) with no match prints ``[]`` (*unverified*). JSONPath filters, slices and
  functions are not supported (an error, not silent).
* The payload is parsed with Python's strict JSON parser. API Gateway's json-smart is permissive
  (unquoted keys, single quotes); such payloads fail here with ``invalid_payload``. A payload not
  starting like JSON (``{``, ``[`` or ``"``) is a plain string for ``$input.path('$')``, as on AWS.
* Numbers print as Java does (``2.0``, ``1.0E7``) when printed directly; inside ``$input.json()`` or a
  printed JSON array, floats use Python's JSON form (``1e+20`` where Java writes ``1.0E20``), and
  ``/`` is not escaped as ``\\/``.
* String methods count code points; Java counts UTF-16 units (differs only beyond the BMP).
  Regular expressions (``replaceAll``, ``matches``, ``split``) run on RE2: Java syntax without
  look-around, back-references or possessive quantifiers (an error if used).
* Only the Java methods API Gateway templates commonly use exist: String ``length contains
  startsWith endsWith indexOf lastIndexOf substring charAt concat toLowerCase toUpperCase trim
  replace replaceAll replaceFirst matches split equals equalsIgnoreCase isEmpty toString``; List
  ``size isEmpty get set add addAll contains indexOf subList``; Map ``get put putAll remove
  containsKey containsValue keySet values entrySet size isEmpty``; numbers ``intValue longValue
  doubleValue``. Others are null (printed as nothing).
* A second write to the same ``$context.requestOverride``/``responseOverride`` entry fails the
  render (AWS documents a 5XX). A ``responseOverride.status`` that is not an integer 100-599 is
  ignored (LocalStack's behaviour; *unverified*). Writes elsewhere in ``$context``,
  ``$stageVariables`` or ``$input.params()`` stay within the render.
* ``$util.urlDecode`` and ``$util.base64Decode`` reject malformed input (Java throws; we fail the
  render); decoded bytes that are not UTF-8 become U+FFFD.
* ``$input.body`` of an empty payload is ``{}`` (LocalStack's behaviour; *unverified*).
* Whitespace around directives follows airspeed: the newline after ``#if(...)``, ``#end`` or a
  ``#set`` line is dropped, the newline after ``#foreach(...)`` is kept, indentation before a
  directive is kept. Velocity 1.7 on AWS differs in places, so the blank lines and indentation of
  output can differ; JSON output parses to the same value.
* Limits beyond API Gateway's (deadline, 10 MB strings, 100,000 items, integers beyond 2**256) are
  ours: AWS would instead time out or run out of memory.

Cost
----
Compiling takes about 1 ms for a typical template and up to about 1 s for one near the 300 KB
limit (airspeed's parser is regex-driven); it happens once per policy load. Rendering DynamoDB's
Scan response template over ten items takes about 110 µs including the payload's JSON parse.
"""

from __future__ import annotations

from addons.vtl.errors import DEFAULT_LIMITS, InvalidPayloadError, Limits, TemplateError, TemplateLimitError
from addons.vtl.template import (
    RenderContext,
    RenderResult,
    RequestOverride,
    ResponseOverride,
    Template,
    compile_template,
)

__all__ = [
    "DEFAULT_LIMITS",
    "InvalidPayloadError",
    "Limits",
    "RenderContext",
    "RenderResult",
    "RequestOverride",
    "ResponseOverride",
    "Template",
    "TemplateError",
    "TemplateLimitError",
    "compile_template",
]
