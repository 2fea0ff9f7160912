"""End to end: a real `sidegate run` process, a real backend process, real HTTP clients."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
from conftest import ROOT, free_port
from procs import PYTHON, DemoBackend, Sidecar, env, raw, request, stop, wait_port

pytestmark = pytest.mark.e2e

API = """
    kind: Api
    stage: e2e
    routes:
      GET /health: {}
      GET /books: {}
      POST /books: {}
      GET /books/{id}: {}
      GET /slow: {integration: {timeout: 300ms}}
"""
PLANTED = "e2e-PLANTED-secret-9043"


@pytest.fixture(scope="module")
def demo():
    backend = DemoBackend()
    yield backend
    backend.close()


@pytest.fixture
def sidecar(tmp_path, demo):
    started: list[Sidecar] = []

    def start(policies=None, **kw):
        s = Sidecar(tmp_path / f"sc{len(started)}", demo.url, {"api.yaml": API} if policies is None else policies, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def test_routes_gateway_errors_and_one_log_line_per_request(sidecar, demo):
    sc = sidecar()
    ok = sc.get("/books/1?token=abc")
    assert ok.status == 200 and ok.json()["id"] == "1"
    assert len(ok.headers["x-amzn-requestid"]) == 36
    miss = sc.get("/authors")
    assert miss.status == 403 and miss.json() == {"message": "Missing Authentication Token"}
    assert miss.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    slow = sc.get("/slow?seconds=3")
    assert slow.status == 504 and slow.json() == {"message": "Endpoint request timed out"}
    assert slow.headers["x-amzn-requestid"]
    lines = sc.log_lines()
    assert [(x["route"], x["status"], x["outcome"]) for x in lines] == [
        ("GET /books/{id}", 200, "allowed"),
        (None, 403, "rejected"),
        ("GET /slow", 504, "rejected"),
    ]
    assert lines[0]["path"] == "/books/1"  # query string removed
    assert lines[0]["request_id"] == ok.headers["x-amzn-requestid"]
    assert (lines[1]["plugin"], lines[1]["reason"]) == ("router", "no_route")
    assert set(lines[0]["checkpoint_us"]) == {
        "method_request",
        "integration_request",
        "integration_response",
        "method_response",
    }


def test_unreachable_backend_is_a_502_gateway_response(tmp_path):
    sc = Sidecar(tmp_path, f"http://127.0.0.1:{free_port()}", {"api.yaml": "kind: Api\n"})
    try:
        r = sc.get("/x")
        assert r.status == 502 and r.json() == {"message": "Network error communicating with endpoint"}
        assert r.headers["x-amzn-errortype"] == "InternalServerErrorException" and r.headers["x-amzn-requestid"]
    finally:
        sc.close()


def test_oversized_and_malformed_requests_get_gateway_responses(sidecar):
    sc = sidecar(sets=["--set", "body_size_limit=1k"])
    big = sc.get("/books", method="POST", body=b"x" * 5000, headers={"content-type": "text/plain"})
    assert big.status == 413 and big.json() == {"message": "Request Too Long"}
    assert big.headers["x-amzn-errortype"] == "BadRequestException" and big.headers["x-amzn-requestid"]
    chunk = b"a" * 600
    chunked = raw(
        sc.port,
        b"POST /books HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4))
        + b"0\r\n\r\n",
    )
    head, _, body = chunked.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), chunked[:300]
    assert b"x-amzn-RequestId" in head and json.loads(body) == {"message": "Request Too Long"}
    bad = raw(sc.port, b"GET /books HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    head, _, body = bad.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), bad[:300]
    assert b"mitmproxy" not in bad and json.loads(body) == {"message": "Bad Request"}
    assert b"x-amzn-RequestId: " in head and b"x-amzn-ErrorType: BadRequestException" in head
    # a smuggling-prone Transfer-Encoding is refused before any plugin, as a gateway response too
    smuggle = raw(sc.port, b"GET /books HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n")
    head, _, body = smuggle.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), smuggle[:300]
    assert body == b'{"message":"Bad Request"}' and b"x-amzn-ErrorType: BadRequestException" in head
    small = sc.get("/books", method="POST", body=b'{"title": "ok"}', headers={"content-type": "application/json"})
    assert small.status == 201
    lines = sc.log_lines()
    assert [x["status"] for x in lines if x["reason"] == "body_too_large"] == [413, 413]


def test_admin_endpoint_metrics_health_ready(sidecar):
    sc = sidecar()
    assert sc.admin("/healthz").status == 200
    assert sc.admin("/readyz").json() == {"status": "ready"}
    sc.get("/books")
    sc.get("/nope")
    m = sc.metrics()
    assert m['sidegate_requests_total{outcome="allowed",route="GET /books",status="200"}'] == 1
    assert m['sidegate_requests_total{outcome="rejected",route="none",status="403"}'] == 1
    assert m['sidegate_rejections_total{enforced="true",plugin="router",reason="no_route"}'] == 1
    assert m['sidegate_checkpoint_seconds_count{checkpoint="method_request"}'] == 2
    assert m['sidegate_policy_reloads_total{result="ok"}'] >= 1
    assert m["sidegate_policy_generation"] >= 1
    assert sc.admin("/nothing").status == 404


def test_hot_reload_swaps_atomically_and_keeps_serving(sidecar):
    sc = sidecar()
    results: list[int] = []
    stop_flag = threading.Event()

    def load():
        deadline = time.monotonic() + 60
        while not stop_flag.is_set() and time.monotonic() < deadline:
            results.append(sc.get("/books").status)

    t = threading.Thread(target=load)
    t.start()
    try:
        assert sc.get("/new").status == 403
        sc.write_policy("api.yaml", API + "      GET /new: {}\n")
        assert _eventually(lambda: sc.get("/new").status == 200)
        gen = sc.metrics()["sidegate_policy_generation"]
        # an invalid edit: the last good set keeps serving, the error is logged with its location and counted
        sc.write_policy("api.yaml", API + "      GET /new: {integration: {timeout: forever}}\n")
        assert _eventually(lambda: sc.metrics().get('sidegate_policy_reloads_total{result="failed"}', 0) >= 1)
        assert "policies/api.yaml:9:37: routes['GET /new'].integration.timeout" in sc.stderr()
        assert sc.get("/new").status == 200 and sc.metrics()["sidegate_policy_generation"] == gen
        # fixing the file applies it
        sc.write_policy("api.yaml", API + "      GET /newer: {}\n")
        assert _eventually(lambda: sc.get("/newer").status == 200)
        assert sc.get("/new").status == 403
    finally:
        stop_flag.set()
        t.join()
    assert len(results) > 20 and set(results) == {200}


def _eventually(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_saved_flows_load_back_with_the_trace(sidecar, tmp_path):
    from mitmproxy import io

    path = tmp_path / "flows.mitm"
    sc = sidecar(sets=["--set", f"save_stream_file={path}"])
    sc.get("/books")
    sc.get("/nope")
    sc.close()
    with open(path, "rb") as fh:
        flows = list(io.FlowReader(fh).stream())
    assert len(flows) == 2
    ok, rejected = flows
    assert ok.metadata["sidegate"]["route"] == "GET /books"
    assert ok.metadata["sidegate"]["trace"][0]["plugin"] == "router"
    assert rejected.metadata["sidegate"]["outcome"] == "rejected" and rejected.marked == ":no_entry:"
    assert rejected.comment.startswith("sidegate: 403 MISSING_AUTHENTICATION_TOKEN by router (no_route)")


def test_plugin_by_module_class_and_report_mode_end_to_end(sidecar):
    policies = {
        "api.yaml": API,
        "deny.yaml": "kind: Plugin\nuse: sample_plugins:DenyHeader\nconfig: {header: x-deny}\n",
    }
    sc = sidecar(policies)
    assert sc.get("/books", headers={"x-deny": "1"}).status == 403
    assert sc.get("/books").status == 200
    report = sidecar(policies, sets=["--set", "sidegate_mode=report"])
    r = report.get("/books", headers={"x-deny": "1"})
    assert r.status == 200
    [line] = report.log_lines()
    assert line["report_only"] == [{"plugin": "deny_header", "reason": "denied_header", "rule": "test/deny-header"}]
    assert (
        report.metrics()['sidegate_rejections_total{enforced="false",plugin="deny_header",reason="denied_header"}'] == 1
    )


def test_secrets_never_reach_logs_flows_or_metrics(sidecar, tmp_path):
    from mitmproxy import io

    path = tmp_path / "flows.mitm"
    policies = {
        "api.yaml": API.replace(
            "GET /books: {}",
            "GET /books:\n        integration:\n"
            "          request_headers: {x-token: {secret_env: SIDEGATE_TEST_SECRET}}",
        )
    }
    sc = sidecar(
        policies,
        sets=["--set", f"save_stream_file={path}", "--set", "termlog_verbosity=debug"],
        extra_env={"SIDEGATE_TEST_SECRET": PLANTED},
    )
    r = sc.get("/books")
    assert r.status == 200
    sc.get("/nope")
    metrics = sc.admin("/metrics").body.decode()
    sc.close()
    flows = path.read_bytes()
    assert PLANTED.encode() not in flows
    assert PLANTED not in sc.stdout_path.read_text() + sc.stderr() + metrics
    with open(path, "rb") as fh:
        assert len(list(io.FlowReader(fh).stream())) == 2


def test_launcher_errors_are_one_line_and_nonzero(tmp_path, demo):
    missing = subprocess.run(
        [PYTHON, "-m", "addons.cli", "run", "--config", "nope.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == "sidegate: nope.yaml: configuration file not found"
    (tmp_path / "bad.yaml").write_text("listen_port: [1, 2\n")
    bad = subprocess.run(
        [PYTHON, "-m", "addons.cli", "run", "--config", "bad.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("sidegate: ") and len(bad.stderr.strip().splitlines()) == 1
    (tmp_path / "unknown.yaml").write_text("no_such_option: 1\n")
    unknown = subprocess.run(
        [PYTHON, "-m", "addons.cli", "run", "--config", "unknown.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
    )
    assert unknown.returncode == 1 and "unknown option(s): no_such_option" in unknown.stderr


def test_invalid_policy_at_start_exits_nonzero_with_location(tmp_path, demo):
    sc = Sidecar(tmp_path, demo.url, {"api.yaml": "kind: Api\ntimeout: 1 week\n"}, wait=False)
    try:
        assert sc.proc.wait(timeout=60) == 1
    finally:
        sc.close()
    assert "policies/api.yaml:2:10: timeout: expected a duration" in sc.stderr()


def test_set_overrides_the_config_file(sidecar):
    # The config file says listen_port: 1; the fixture's --set listen_port wins (the sidecar is reachable).
    sc = sidecar(sets=["--set", "sidegate_request_id_header=x-request-id"])
    r = sc.get("/books")
    assert r.status == 200 and "x-request-id" in r.headers and "x-amzn-requestid" not in r.headers


def test_mitmdump_with_the_entry_script(tmp_path, demo):
    port, admin = free_port(), free_port()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "api.yaml").write_text("kind: Api\nroutes:\n  GET /books: {}\n")
    mitmdump = str(ROOT / ".venv" / "bin" / "mitmdump") if (ROOT / ".venv/bin/mitmdump").exists() else "mitmdump"
    proc = subprocess.Popen(
        [
            mitmdump,
            "-q",
            "-s",
            str(ROOT / "addons" / "entry.py"),
            "--mode",
            f"reverse:{demo.url}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--set",
            "sidegate_policies=policies",
            "--set",
            f"sidegate_admin=127.0.0.1:{admin}",
            "--set",
            "connection_strategy=lazy",
        ],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(port, proc)
        assert request(f"http://127.0.0.1:{port}/books").status == 200
        r = request(f"http://127.0.0.1:{port}/authors")
        assert r.status == 403 and r.json() == {"message": "Missing Authentication Token"}
    finally:
        stop(proc)


def _curl_h2(url: str, *args: str) -> tuple[str, int, dict[str, str], bytes]:
    out = subprocess.run(
        ["curl", "-sk", "--http2", "-D", "-", *args, url], capture_output=True, timeout=30, check=True
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    version, status = status_line.split()[:2]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return version, int(status), headers, body


def test_http2_over_tls_gets_the_same_gateway_answers(sidecar, tmp_path):
    sc = sidecar(sets=["--set", "body_size_limit=1k", "--set", f"confdir={tmp_path / 'mitmproxy-conf'}"])
    base = f"https://127.0.0.1:{sc.port}"
    version, status, _, body = _curl_h2(base + "/books")
    assert (version, status) == ("HTTP/2", 200) and json.loads(body)[0]["id"] == "1"
    version, status, headers, body = _curl_h2(base + "/nope")
    assert (version, status) == ("HTTP/2", 403) and json.loads(body) == {"message": "Missing Authentication Token"}
    for extra in ([], ["-H", "transfer-encoding: chunked"]):
        version, status, headers, body = _curl_h2(base + "/books", "--data-binary", "x" * 5000, *extra)
        assert (version, status) == ("HTTP/2", 413)
        assert json.loads(body) == {"message": "Request Too Long"}
        assert headers["x-amzn-errortype"] == "BadRequestException" and headers["x-amzn-requestid"]


def test_mitmproxys_own_errors_carry_cors_headers(sidecar):
    cors = "kind: Cors\nallow_origins: [https://app.example]\n"
    sc = sidecar({"api.yaml": API, "cors.yaml": cors}, sets=["--set", "body_size_limit=1k"])
    big = sc.get("/books", method="POST", body=b"x" * 5000, headers={"origin": "https://app.example"})
    assert big.status == 413
    assert big.headers["access-control-allow-origin"] == "https://app.example" and big.headers["vary"] == "Origin"
    chunk = b"a" * 600
    chunked = raw(
        sc.port,
        b"POST /books HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4))
        + b"0\r\n\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 413") and b"access-control-allow-origin: https://app.example" in chunked


def test_reload_interval_can_be_set_on_the_command_line(sidecar):
    sc = sidecar(sets=["--set", "sidegate_reload_interval=0"])
    assert sc.get("/books").status == 200
    sc.write_policy("api.yaml", "kind: Api\nroutes:\n  GET /new: {}\n")
    time.sleep(0.6)
    assert sc.get("/books").status == 200  # hot reload is off: the old set still serves
