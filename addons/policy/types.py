"""Field types shared by every policy kind: durations, sizes, modes, URLs, secret references.

Each type validates and converts once at load time, so request-time code only reads
ready-made values (seconds as float, bytes as int, compiled patterns, resolved secrets).
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import re2
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import core_schema

# Paths inside policies are relative to the policy directory's parent (the repository root).
POLICY_ROOT: ContextVar[Path] = ContextVar("POLICY_ROOT", default=Path())

Mode = Literal["enforce", "report"]
HttpMethod = Literal["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, None: 1,
}  # fmt: skip


class PolicyModel(BaseModel):
    """Base of every policy model: immutable, and a typo is an error, never a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def parse_duration(value: Any) -> float:
    """``300ms``, ``29s``, ``5m``, ``1h`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300ms, 29s or 5m")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration such as 300ms, 29s or 5m (got {value!r})")


def parse_size(value: Any) -> int:
    """``16KB``, ``10MB``, ``64KiB`` or a number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 16KB or 10MB")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        return int(m.group(1)) * _SIZE_UNITS[unit]
    raise ValueError(f"expected a size such as 16KB or 10MB (got {value!r})")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "pattern": _DURATION.pattern}]}),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": _SIZE.pattern}]}),
]


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors become policy errors, not absl lines on stderr


def _compile_regex(value: Any) -> Any:
    """Patterns from policy run in linear time: RE2 (no backreferences, no catastrophic backtracking)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a regular expression string (got {value!r})")
    try:
        return re2.compile(value, options=_RE2_OPTIONS)
    except re2.error as e:
        detail = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(f"invalid regular expression ({detail})") from None


# A compiled RE2 pattern (``.search``, ``.fullmatch``, ``.match``), from a policy string.
Regex = Annotated[
    Any,
    BeforeValidator(_compile_regex),
    WithJsonSchema({"type": "string", "format": "regex"}),
]


def _check_http_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an http(s) URL (got {value!r})")
    # Stage-variable placeholders are substituted per request; check the URL around them.
    probe = re.sub(r"\$\{stageVariables\.[A-Za-z0-9_.-]+\}", "x", value)
    parts = urlsplit(probe)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http(s) URL such as http://127.0.0.1:8081 (got {value!r})")
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise ValueError(f"invalid port in URL {value!r}") from None
    return value.rstrip("/") if parts.path in ("", "/") else value


HttpUrl = Annotated[str, BeforeValidator(_check_http_url)]


class Secret:
    """A resolved secret. Its text form never shows the value: logs, traces and errors stay clean."""

    __slots__ = ("_value", "origin", "path")

    def __init__(self, value: str, origin: str, path: Path | None = None) -> None:
        self._value = value
        self.origin = origin  # "env:NAME" or "file:path": safe to show
        self.path = path  # the file it was read from, watched for changes (rotation)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"<secret from {self.origin}>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            lambda ref: ref.resolve(), handler.generate_schema(SecretRef)
        )


class SecretRef(PolicyModel):
    """``{secret_env: NAME}`` or ``{secret_file: path}``; resolved at load, never literal in a policy."""

    secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_literal(cls, data: Any) -> Any:
        if isinstance(data, str | int | float):
            raise ValueError(
                "secrets are references, not literal values: use {secret_env: NAME} or {secret_file: path}"
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret_env, secret_file")
        return self

    def resolve(self) -> Secret:
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env)
            if value is None:
                raise ValueError(f"environment variable {self.secret_env} is not set")
            return Secret(value, f"env:{self.secret_env}")
        assert self.secret_file is not None
        path = POLICY_ROOT.get() / self.secret_file
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"cannot read secret file {self.secret_file} ({e.strerror})") from None
        return Secret(text.rstrip("\r\n"), f"file:{self.secret_file}", path.resolve())
