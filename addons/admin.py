"""Admin endpoint on its own loopback port: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``,
``/keys`` (API keys by id: plan, quota, buckets; what ``sidegate keys`` prints).

Served by aiohttp on mitmproxy's event loop; it never sees proxied traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("sidegate")


def parse_listen(spec: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT (got {spec!r})")
    return host.strip("[]") or "127.0.0.1", int(port)


class AdminServer:
    def __init__(
        self,
        metrics: Callable[[], bytes],
        ready: Callable[[], bool],
        keys: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._ready = ready
        self._keys = keys
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/keys", self._get_keys)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runner = runner
        sockets = runner.addresses
        self.address = (host, sockets[0][1] if sockets else port)
        log.info("sidegate: admin endpoint on http://%s:%d (/metrics /healthz /readyz)", host, self.address[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics(), headers={"content-type": CONTENT_TYPE_LATEST})

    async def _get_keys(self, request: web.Request) -> web.Response:
        """API keys by id with plan, quota and bucket state (never the key values)."""
        return web.json_response(await self._keys() if self._keys else [])

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "no policy set loaded"}, status=503)
