"""One structured JSON line per request (structlog), to stdout or a file.

A last-line-of-defence processor replaces any loaded secret value with ``[redacted]`` before a
line is written: secrets never reach logs even if a plugin puts one in an event by mistake.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import structlog


class AccessLog:
    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()  # each secret as it would appear in a rendered line
        self._file: TextIO | None = None
        self._logger: Any = None
        self.open("-")

    def set_secrets(self, values: tuple[str, ...]) -> None:
        forms = set()
        for value in values:
            if value:
                forms.add(value)
                forms.add(json.dumps(value)[1:-1])  # escaped the way the JSON renderer writes it
        self._secrets = tuple(sorted(forms, key=len, reverse=True))

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
                structlog.processors.JSONRenderer(sort_keys=False),
                self._redact,
            ],
            cache_logger_on_first_use=True,
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _redact(self, logger: object, method: str, rendered: Any) -> str:
        """Runs on the rendered line: one substring search per secret, whatever the event holds."""
        line: str = rendered
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, "[redacted]")
        return line

    def write(self, **fields: Any) -> None:
        self._logger.info("request", **fields)
