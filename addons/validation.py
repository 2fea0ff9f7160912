"""Request validation as API Gateway does it. Checkpoint: method request (parameters as soon as
the headers are in; the body once it is). Policy: ``kind: Api`` routes (``request_validator``,
``request_parameters``, ``request_models``).

- Parameters first: each required ``method.request.{path,querystring,header}.<name>`` must be
  present and non-blank, else 400 ``{"message": "Missing required request parameters: [a, b]"}``
  (BAD_REQUEST_PARAMETERS).
- Then the body, against the JSON Schema draft 4 model for the request's Content-Type (no
  Content-Type: ``application/json``; no model for it: ``$default``; neither: not validated). An
  empty body counts as ``{}``; a body that is not JSON, or does not match, is 400
  ``{"message": "Invalid request body"}`` (BAD_REQUEST_BODY). The trace names the first failing
  JSON pointer and schema keyword, never the value; ``$context.error.validationErrorString`` carries
  the same for gateway-response templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import best_match

from addons.decision import Exchange, Reject
from addons.policy.models import ApiPolicy

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class RouteValidation:
    params: tuple[tuple[str, str], ...]  # (location, name) of required parameters, in policy order
    models: dict[str, Any]  # media type -> compiled Draft4Validator
    check_params: bool
    check_body: bool


def compile_routes(api: ApiPolicy) -> dict[str, RouteValidation]:
    out = {}
    for key, route in api.routes.items():
        if route.request_validator is None:
            continue
        params = tuple(
            (ref.split(".")[2], ref.split(".", 3)[3]) for ref, required in route.request_parameters.items() if required
        )
        out[key] = RouteValidation(
            params,
            dict(route.request_models),
            route.request_validator in ("all", "params"),
            route.request_validator in ("all", "body"),
        )
    return out


class RequestValidation:
    name = "request_validation"

    def __init__(self, routes: dict[str, RouteValidation], source: str) -> None:
        self._routes = routes
        self.source = source

    def _conf(self, ex: Exchange) -> RouteValidation | None:
        route = ex.route
        return self._routes.get(route.key) if route is not None else None

    def method_request(self, ex: Exchange) -> Reject | None:
        conf = self._conf(ex)
        if conf is None or not conf.check_params or not conf.params:
            return None
        missing = [name for location, name in conf.params if not _present(ex, location, name)]
        if not missing:
            return None
        ex.details[self.name] = {"missing": missing}
        return Reject(
            "BAD_REQUEST_PARAMETERS",
            reason="missing_parameters",
            source=self.source,
            message=f"Missing required request parameters: [{', '.join(missing)}]",
        )

    def method_request_body(self, ex: Exchange) -> Reject | None:
        conf = self._conf(ex)
        if conf is None or not conf.check_body or not conf.models:
            return None
        media = ex.request.headers.get("content-type", JSON).split(";", 1)[0].strip().lower() or JSON
        validator = conf.models.get(media) or conf.models.get("$default")
        if validator is None:
            return None  # API Gateway: no model for this content type, no validation
        ok, document = ex.json_body(empty={})
        if not ok:
            return self._invalid(ex, media, "(root)", "json", "body is not valid JSON")
        error = best_match(validator.iter_errors(document))
        if error is None:
            return None
        pointer = "/" + "/".join(str(p) for p in error.absolute_path)
        return self._invalid(ex, media, pointer, str(error.validator), f"{error.validator} failed at {pointer}")

    def _invalid(self, ex: Exchange, media: str, pointer: str, keyword: str, text: str) -> Reject:
        ex.details[self.name] = {"pointer": pointer, "keyword": keyword, "content_type": media}
        ex.vars.setdefault("error_context", {})["error.validationErrorString"] = (
            f"Request body does not match model schema for content type {media}: [{text}]"
        )
        return Reject("BAD_REQUEST_BODY", reason="invalid_body", rule=f"validation/{keyword}", source=self.source)


def _present(ex: Exchange, location: str, name: str) -> bool:
    if location == "path":
        value = ex.path_params.get(name)
    elif location == "querystring":
        value = ex.request.query.get(name)
    else:
        value = ex.request.headers.get(name)
    return value is not None and value.strip() != ""
