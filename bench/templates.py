"""Mapping-template cost: the bookstore's templates in-process, and a templated route against a plain
proxied route end to end in the same run.

    .venv/bin/python bench/templates.py [--duration 5] [--iterations 5000]

1. In-process: the bookstore's Scan request template and its response template over a 10-item
   DynamoDB answer, compiled once and rendered N times (µs per render).
2. End to end: one `sidegate run` with two routes to bench/backend.py: `GET /plain` (http_proxy) and
   `GET /templated` (type http, a request template, an integration response with a response
   template and a header mapping); wrk drives each route in turn (same settings, alternating, two
   rounds) and the script prints requests/s and the ratio templated / plain.
Loopback only; every loop is bounded; all processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent

SCAN_ANSWER = json.dumps({
    "Count": 10,
    "Items": [{"id": {"S": str(i)}, "title": {"S": f"Book {i}"}, "author": {"S": f"Author {i}"}} for i in range(10)],
    "ScannedCount": 10,
})

POLICY = """
kind: Api
routes:
  GET /plain: {}
  GET /templated:
    integration:
      type: http
      uri: http://127.0.0.1:BACKEND/templated
      method: POST
      request_templates:
        application/json: '{"TableName": "books", "Limit": $input.params(''limit'')}'
      responses:
        - status: 200
          response_parameters:
            method.response.header.x-ok: integration.response.body.ok
          templates:
            application/json: '{"ok": $input.json(''$.ok''), "request": "$context.requestId"}'
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def microbench(iterations: int) -> dict[str, float]:
    from ruamel.yaml import YAML

    from addons.vtl import RenderContext, compile_template

    api = YAML(typ="safe").load((ROOT / "docs/examples/bookstore/policies/api.yaml").read_text())
    scan = api["routes"]["GET /books"]["integration"]
    request_t = compile_template(scan["request_templates"]["application/json"], source="request")
    response_t = compile_template(scan["responses"][0]["templates"]["application/json"], source="response")
    ctx_req = RenderContext(body=b"", stage_variables={"table": "books"}, context={"requestId": "r"})
    ctx_resp = RenderContext(body=SCAN_ANSWER.encode(), stage_variables={"table": "books"})
    assert len(json.loads(response_t.render(ctx_resp).text)) == 10
    out = {}
    for name, template, ctx in (("request_us", request_t, ctx_req), ("response_10_items_us", response_t, ctx_resp)):
        samples = []
        for _ in range(iterations):
            t0 = time.perf_counter_ns()
            template.render(ctx)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        out[name] = round(statistics.median(samples), 1)
    return out


def wrk(port: int, path: str, seconds: float) -> float:
    result = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{max(1, round(seconds))}s", "--timeout", "5s", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    )  # fmt: skip
    if "Non-2xx" in result.stdout:
        raise RuntimeError(f"{path}: non-2xx answers under load:\n{result.stdout}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    assert m, result.stdout
    return float(m.group(1))


def end_to_end(seconds: float) -> dict[str, object]:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    work = Path(tempfile.mkdtemp(prefix="sidegate-templates-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend_port, port = free_port(), free_port()
        backend = subprocess.Popen([sys.executable, str(ROOT / "bench/backend.py"), "--port", str(backend_port)])
        procs.append(backend)
        wait_port(backend_port, backend)
        (work / "policies").mkdir()
        (work / "policies/api.yaml").write_text(POLICY.replace("BACKEND", str(backend_port)))
        sidegate = subprocess.Popen(
            [str(VENV_BIN / "sidegate"), "run", "--config", str(ROOT / "mitm_config.yaml"),
             "--set", f"mode=reverse:http://127.0.0.1:{backend_port}", "--set", f"listen_port={port}",
             "--set", f"sidegate_policies={work / 'policies'}", "--set", "sidegate_admin=",
             "--set", "sidegate_access_log=/dev/null", "--set", "sidegate_reload_interval=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(sidegate)
        wait_port(port, sidegate)
        for path in ("/plain", "/templated"):
            wrk(port, path, 1)  # warm-up, and a check that both answer 200
        rounds: dict[str, list[float]] = {"/plain": [], "/templated": []}
        for order in (("/plain", "/templated"), ("/templated", "/plain")):
            for path in order:
                rounds[path].append(wrk(port, path, seconds))
        plain, templated = (statistics.median(rounds[p]) for p in ("/plain", "/templated"))
        return {"plain_rps": round(plain), "templated_rps": round(templated), "ratio": round(templated / plain, 3),
                "rounds": rounds}  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--iterations", type=int, default=5000)
    args = parser.parse_args()
    micro = microbench(max(100, min(args.iterations, 100_000)))
    print(f"templates in-process (median µs per render): {micro}", flush=True)
    e2e = end_to_end(max(1.0, min(args.duration, 60.0)))
    print(f"end to end: plain {e2e['plain_rps']} req/s, templated {e2e['templated_rps']} req/s, "
          f"ratio {e2e['ratio']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
