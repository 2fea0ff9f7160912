"""Shared fixtures: policy writer, in-loop HTTP backend, a configured gateway, flow driver."""

from __future__ import annotations

import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from mitmproxy import http
from mitmproxy.test import taddons

from addons.gateway import Sidegate

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # sample_plugins.py, loaded by policies as module:Class


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_policies(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return directory


@dataclass
class Backend:
    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    """A real HTTP backend on a free loopback port that echoes what it received."""
    seen: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append({"method": request.method, "path": request.path_qs, "headers": dict(request.headers), "body": body})
        if request.path.startswith("/sleep"):
            import asyncio

            await asyncio.sleep(float(request.query.get("s", "5")))
        if request.path == "/truncated":  # a JSON answer cut short
            return web.Response(status=200, body=b'{"n": 1, "items": [1, 2', content_type="application/json")
        if request.path.startswith("/status/"):
            return web.Response(status=int(request.path.rsplit("/", 1)[1]), text="status")
        resp = web.json_response({"method": request.method, "path": request.path_qs})
        resp.headers["x-backend"] = "yes"
        resp.headers["connection"] = "keep-alive"
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Backend(f"http://127.0.0.1:{port}", seen)
    finally:
        await runner.cleanup()


GatewayFactory = Callable[..., tuple[taddons.context, Sidegate]]


@pytest.fixture
def make_gateway(tmp_path: Path) -> Any:
    """Build a Sidegate inside mitmproxy's taddons context from policy texts."""
    contexts: list[taddons.context] = []

    def make(files: dict[str, str] | None = None, *, upstream: str = "http://127.0.0.1:9", **options: Any):
        policies = write_policies(tmp_path / "policies", files or {})
        gate = Sidegate()
        tctx = taddons.context(gate)
        contexts.append(tctx)
        gate.access_log.open(str(tmp_path / "access.log"))
        tctx.configure(
            gate,
            mode=[f"reverse:{upstream}"],
            sidegate_policies=str(policies),
            sidegate_admin="",
            **options,
        )
        return tctx, gate

    yield make
    for c in contexts:
        c.__exit__(None, None, None)


async def drive(gate: Sidegate, flow: http.HTTPFlow) -> http.HTTPFlow:
    """Run a flow through the checkpoints in mitmproxy's hook order."""
    method_request, integration_request, integration_response, method_response = gate.addons
    await method_request.requestheaders(flow)
    await method_request.request(flow)
    await integration_request.request(flow)
    if flow.response is not None:
        await integration_response.response(flow)
        await method_response.response(flow)
    return flow


def access_lines(tmp_path: Path) -> list[dict[str, Any]]:
    import json

    path = tmp_path / "access.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class RedisServer:
    """A real redis-server on a free loopback port, without persistence."""

    def __init__(self, port: int | None = None) -> None:
        import shutil
        import subprocess

        binary = shutil.which("redis-server")
        if binary is None:
            if __import__("os").environ.get("CI"):
                pytest.fail("redis-server is not installed (.ci/run installs Debian's redis-server)")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--enable-debug-command",  # DEBUG SLEEP: the slow-Redis test
                "local",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def keys(self, pattern: str = "*") -> list[str]:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        try:
            return sorted(client.keys(pattern))
        finally:
            client.close()


@pytest.fixture
def redis_server():
    server = RedisServer()
    yield server
    server.stop()
