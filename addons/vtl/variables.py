"""API Gateway's template variables: ``$input``, ``$util``, ``$context`` (with overrides), ``$stageVariables``."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from addons.vtl.errors import Abort, InvalidPayloadError, current
from addons.vtl.jsonpath import MISSING, compile_path, evaluate
from addons.vtl.values import CowMap, SandboxMap, SandboxObject, adopt, java_str, json_text

# ----------------------------------------------------------------------------------------------
# $util


def _escape_unit(unit: int) -> str:
    return f"\\u{unit:04X}"


_JS_ASCII = {ord("'"): "\\'", ord('"'): '\\"', ord("\\"): "\\\\", ord("/"): "\\/"}
_JS_ASCII.update({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"})
_JS_ASCII.update({c: _escape_unit(c) for c in range(32) if c not in _JS_ASCII})
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape_non_ascii(match: re.Match[str]) -> str:
    # Java escapes UTF-16 code units, so a character outside the BMP becomes a surrogate pair.
    encoded = match.group().encode("utf-16-be")
    return "".join(_escape_unit(int.from_bytes(encoded[i : i + 2])) for i in range(0, len(encoded), 2))


def escape_javascript(text: str) -> str:
    """Commons-lang ``StringEscapeUtils.escapeJavaScript``, which API Gateway's ``$util`` uses: ``'`` becomes
    ``\\'`` (documented: invalid in JSON), ``/`` becomes ``\\/`` and non-ASCII characters ``\\uXXXX``."""
    escaped = text.translate(_JS_ASCII)
    if not escaped.isascii():
        escaped = _NON_ASCII.sub(_escape_non_ascii, escaped)
    return escaped


def _as_text(value: Any) -> str:
    return value if type(value) is str else java_str(value) if value is not None else ""


def url_encode(text: str) -> str:
    """``java.net.URLEncoder`` (UTF-8): keeps ``A-Za-z0-9.-*_``, space becomes ``+``."""
    return quote_plus(text, safe="*").replace("~", "%7E")


_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def url_decode(text: str) -> str:
    if _BAD_PERCENT.search(text):
        raise Abort("$util.urlDecode(): malformed %-escape")
    return unquote_plus(text, errors="replace")


def base64_decode(text: str) -> str:
    """Java's basic decoder: standard alphabet, padding optional, anything else is an error."""
    stripped = text.rstrip("=")
    try:
        raw = base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Abort("$util.base64Decode(): the argument is not base64") from None
    return raw.decode("utf-8", "replace")


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise Abort("$util.parseJson(): the argument is not valid JSON") from None


class MethodName(SandboxObject):
    """``$input.json`` or ``$util.urlEncode`` named without parentheses: API Gateway prints ``{}``."""

    __slots__ = ()

    def vtl_property(self, name: str) -> Any:
        return self


METHOD_NAME = MethodName()

_UTIL_METHODS = {
    "escapeJavaScript": escape_javascript,
    "parseJson": parse_json,
    "urlEncode": url_encode,
    "urlDecode": url_decode,
    "base64Encode": lambda s: base64.b64encode(s.encode("utf-8")).decode("ascii"),
    "base64Decode": base64_decode,
}


class UtilVariable(SandboxObject):
    __slots__ = ()

    def vtl_property(self, name: str) -> Any:
        return METHOD_NAME if name in _UTIL_METHODS else None

    def vtl_call(self, name: str, args: list[Any]) -> Any:
        method = _UTIL_METHODS.get(name)
        if method is None or len(args) != 1:
            return None
        if args[0] is None:
            return None
        result = method(_as_text(args[0]))
        if type(result) is str:
            current().check_chars(len(result))
        return result


UTIL = UtilVariable()

# ----------------------------------------------------------------------------------------------
# $input

_INPUT_METHODS = frozenset({"json", "path", "params"})


class InputVariable(SandboxObject):
    """The payload and request parameters. The payload is parsed at most once per render, on first use."""

    __slots__ = ("_body", "_document", "_params", "_sources")

    def __init__(self, body: str, path: Mapping[str, str], query: Mapping[str, str], header: Mapping[str, str]) -> None:
        self._body = body
        self._sources = (path, query, header)
        self._document: Any = MISSING
        self._params: CowMap | None = None

    def document(self) -> Any:
        if self._document is MISSING:
            text = self._body
            if not text.strip():
                self._document = {}  # API Gateway treats an empty payload as {}
            else:
                try:
                    self._document = json.loads(text)
                except (ValueError, RecursionError):
                    # json-smart (permissive) takes anything not starting like JSON as a plain string.
                    if text.lstrip()[:1] in ("{", "[", '"'):
                        raise Abort("the payload is not valid JSON", InvalidPayloadError) from None
                    self._document = text
        return self._document

    def vtl_property(self, name: str) -> Any:
        if name == "body":
            return self._body if self._body else "{}"
        return METHOD_NAME if name in _INPUT_METHODS else None

    def vtl_call(self, name: str, args: list[Any]) -> Any:
        if name == "params":
            if not args:
                return self._all_params()
            if len(args) == 1:
                return self._param(_as_text(args[0]))
            return None
        if name not in ("json", "path") or len(args) != 1:
            return None
        found = evaluate(compile_path(_as_text(args[0])), self.document())
        if name == "path":
            return None if found is MISSING else found
        return "" if found is MISSING else json_text(found)

    def _param(self, name: str) -> str:
        for source in self._sources:  # path, then query string, then header (API Gateway's order)
            value = source.get(name)
            if value is not None:
                return _as_text(adopt(value))
        return ""

    def _all_params(self) -> CowMap:
        if self._params is None:
            path, query, header = self._sources
            self._params = CowMap({"path": path, "querystring": query, "header": header})
        return self._params


# ----------------------------------------------------------------------------------------------
# $context overrides


class OverrideMap(SandboxMap):
    """``$context.requestOverride.header`` and friends. API Gateway: "Overrides are final. An override may
    only be applied to each parameter once", else a 5XX, so a second write to one entry fails the render."""

    __slots__ = ("_fixed", "_label", "_prior", "values")

    def __init__(self, label: str, prior: Any = None, fixed: dict[str, OverrideMap] | None = None) -> None:
        self._label = label
        self._prior = prior if isinstance(prior, Mapping) else {}
        self._fixed = fixed or {}
        self.values: dict[str, Any] = {}

    def get(self, key: Any) -> Any:
        if key in self._fixed:
            return self._fixed[key]
        name = _as_text(key)
        if name in self.values:
            return self.values[name]
        return adopt(self._prior.get(name))

    def put(self, key: Any, value: Any) -> Any:
        if key in self._fixed:
            raise Abort(f"$context.{self._label}.{key} cannot be replaced; set its entries instead")
        name = _as_text(key)
        if name in self.values:
            raise Abort(f"an entry of $context.{self._label} was overridden twice (API Gateway allows once)")
        self.values[name] = value
        current().check_items(len(self.values))
        return adopt(self._prior.get(name))

    def remove(self, key: Any) -> Any:
        raise Abort(f"entries of $context.{self._label} cannot be removed")

    def keys(self) -> list[Any]:
        keys: list[Any] = list(self._fixed)
        keys.extend(k for k in self._prior if k not in self.values)
        keys.extend(self.values)
        return keys


class Overrides:
    """The four override maps one render may fill, plus the status."""

    __slots__ = ("request", "request_header", "request_path", "request_query", "response", "response_header")

    def __init__(self, prior: Mapping[str, Any]) -> None:
        req = prior.get("requestOverride")
        res = prior.get("responseOverride")
        req = req if isinstance(req, Mapping) else {}
        res = res if isinstance(res, Mapping) else {}
        self.request_header = OverrideMap("requestOverride.header", req.get("header"))
        self.request_query = OverrideMap("requestOverride.querystring", req.get("querystring"))
        self.request_path = OverrideMap("requestOverride.path", req.get("path"))
        self.response_header = OverrideMap("responseOverride.header", res.get("header"))
        self.request = OverrideMap(
            "requestOverride",
            fixed={"header": self.request_header, "querystring": self.request_query, "path": self.request_path},
        )
        self.response = OverrideMap(
            "responseOverride", {"status": res.get("status")}, fixed={"header": self.response_header}
        )


def context_variable(raw: Mapping[str, Any], overrides: Overrides) -> CowMap:
    context = CowMap(raw, role="context")
    context.put("requestOverride", overrides.request)
    context.put("responseOverride", overrides.response)
    return context
