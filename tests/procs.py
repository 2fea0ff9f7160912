"""Real processes for end-to-end tests: the demo backend, `sidegate run`/`web`, plain mitmdump."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import ROOT, TESTS, free_port

PYTHON = sys.executable


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)])
    e["PYTHONUNBUFFERED"] = "1"
    e.update(extra)
    return e


@dataclass
class Http:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Http:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Http(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as e:
        return Http(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes or the answer is complete."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                joined = b"".join(chunks)
                head, sep, rest = joined.partition(b"\r\n\r\n")
                if sep:
                    length = [
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ]
                    if length and len(rest) >= length[0]:
                        break
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


class DemoBackend:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "addons.demo", "--port", str(self.port)],
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        stop(self.proc)


class Sidecar:
    """`sidegate run|web` in a temp dir with its own config, policies, logs and free ports."""

    def __init__(
        self,
        workdir: Path,
        backend_url: str,
        policies: dict[str, str] | None = None,
        *,
        kind: str = "run",
        sets: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        command: list[str] | None = None,
        wait: bool = True,
    ) -> None:
        self.dir = workdir
        self.port = free_port()
        self.admin_port = free_port()
        self.web_port = free_port()
        (workdir / "policies").mkdir(parents=True, exist_ok=True)
        for name, text in (policies or {}).items():
            (workdir / "policies" / name).write_text(textwrap.dedent(text).lstrip("\n"))
        (workdir / "mitm_config.yaml").write_text(
            textwrap.dedent(f"""
            mode: ["reverse:{backend_url}"]
            listen_host: 127.0.0.1
            listen_port: 1
            connection_strategy: lazy
            sidegate_policies: policies
            sidegate_admin: 127.0.0.1:{self.admin_port}
            sidegate_reload_interval: 200ms
            web_host: 127.0.0.1
            web_port: {self.web_port}
            web_open_browser: false
        """)
        )
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        args = command or [
            PYTHON,
            "-m",
            "addons.cli",
            kind,
            "--config",
            "mitm_config.yaml",
            "--set",
            f"listen_port={self.port}",
            *(sets or []),
        ]
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            args, cwd=workdir, env=env(**(extra_env or {})), stdout=self._out, stderr=self._err
        )
        if wait:
            wait_port(self.port, self.proc)
            if "sidegate_admin=" not in " ".join(args):
                wait_port(self.admin_port, self.proc)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, **kw: Any) -> Http:
        return request(self.url(path), **kw)

    def admin(self, path: str) -> Http:
        return request(f"http://127.0.0.1:{self.admin_port}{path}")

    def metrics(self) -> dict[str, float]:
        """Prometheus text -> {'name{labels}': value}, labels exactly as the exporter prints them."""
        out = {}
        for line in self.admin("/metrics").body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def write_policy(self, name: str, text: str) -> None:
        path = self.dir / "policies" / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(text).lstrip("\n"))
        tmp.replace(path)  # atomic, as editors and config management do

    def close(self) -> int:
        stop(self.proc)
        self._out.close()
        self._err.close()
        return self.proc.returncode
