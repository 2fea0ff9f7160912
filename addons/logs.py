"""One structured JSON line per request (structlog), to stdout or a file.

A last-line-of-defence processor replaces any loaded secret value with ``[redacted]`` before a
line is written: secrets never reach logs even if a plugin puts one in an event by mistake.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

EventDict = MutableMapping[str, Any]


class AccessLog:
    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._file: TextIO | None = None
        self._logger: Any = None
        self.open("-")

    def set_secrets(self, values: tuple[str, ...]) -> None:
        self._secrets = tuple(v for v in values if v)

    def open(self, target: str) -> None:
        self.close()
        if target in ("", "-"):
            stream: TextIO = sys.stdout
        else:
            stream = self._file = open(target, "a", encoding="utf-8", buffering=1)
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(stream),
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
                self._redact,
                structlog.processors.JSONRenderer(sort_keys=False),
            ],
            cache_logger_on_first_use=True,
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _redact(self, logger: object, method: str, event: EventDict) -> EventDict:
        if not self._secrets:
            return event
        return {k: _scrub(v, self._secrets) for k, v in event.items()}

    def write(self, **fields: Any) -> None:
        self._logger.info("request", **fields)


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for s in secrets:
            if s in value:
                value = value.replace(s, "[redacted]")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value
