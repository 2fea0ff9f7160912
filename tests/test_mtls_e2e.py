"""Mutual TLS end to end: a real mitmdump (sidegate + ClientTls, ``tests/mtls_entry.py``) in reverse
mode in front of a real backend, driven by Python's ``ssl``, ``curl`` and ``openssl s_client``, and
compared with a real nginx (``ssl_verify_client on``, same bundle, depth and CRLs) on the whole
verdict matrix. Certificates are generated per run (``addons/pki.py``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS, free_port
from procs import env, raw, request, stop, wait_port
from test_mtls_handshake import CASE_NAMES, VERIFY_DEPTH, Case, Matrix, build_matrix, client_context

from addons import pki
from addons.mtls.identity import ClientIdentity
from addons.mtls.models import CrlFile

pytestmark = pytest.mark.e2e

MITMDUMP = Path(sys.executable).with_name("mitmdump")
REQUEST = b"GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


# -- processes -------------------------------------------------------------------------------------


class EchoBackend:
    """An HTTP backend in this process: records every request and counts TCP connections."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                backend.requests.append({"path": self.path, "headers": list(self.headers.items())})
                body = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request: Any, client_address: Any) -> None:
                backend.connections += 1
                super().process_request(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, index: int = -1) -> list[tuple[str, str]]:
        return self.requests[index]["headers"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MtlsSidecar:
    """``mitmdump -s tests/mtls_entry.py`` in reverse mode, with its own policy directory and ports."""

    def __init__(self, workdir: Path, backend: EchoBackend, mtls_yaml: str, sets: tuple[str, ...] = ()) -> None:
        self.dir = workdir
        self.port = free_port()
        self.admin_port = free_port()
        policies = workdir / "policies"
        policies.mkdir(parents=True)
        (policies / "api.yaml").write_text("kind: Api\n")
        self.policy_file = policies / "mtls.yaml"
        self.policy_file.write_text(mtls_yaml)
        self.log_path = workdir / "mitmdump.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                str(MITMDUMP), "-s", str(TESTS / "mtls_entry.py"),
                "--mode", f"reverse:{backend.url}", "--listen-host", "127.0.0.1", "--listen-port", str(self.port),
                "--set", "connection_strategy=lazy",
                "--set", f"confdir={workdir / 'mitmproxy'}",
                "--set", f"sidegate_policies={policies}",
                "--set", f"sidegate_admin=127.0.0.1:{self.admin_port}",
                "--set", f"sidegate_access_log={workdir / 'access.log'}",
                "--set", "sidegate_reload_interval=0.2",
                *(arg for option in sets for arg in ("--set", option)),
            ],
            cwd=workdir, env=env(), stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_port(self.port, self.proc)
            wait_port(self.admin_port, self.proc)
        except Exception:
            self.close()
            raise RuntimeError(f"mitmdump did not start:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def refusals(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            if "sidegate: client TLS refused: " in line:
                out.append(json.loads(line.split("sidegate: client TLS refused: ", 1)[1]))
        return out

    def metrics(self) -> dict[str, float]:
        out = {}
        for line in request(f"http://127.0.0.1:{self.admin_port}/metrics").body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def wait_for_generation(self, generation: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"policy generation {generation} loaded" in self.log():
                return
            time.sleep(0.1)
        raise TimeoutError(f"policy generation {generation} never loaded:\n{self.log()}")

    def close(self) -> None:
        stop(self.proc)
        self._log.close()


class Nginx:
    """Debian's nginx on a free loopback port with ``ssl_verify_client on`` and the matrix's PKI."""

    def __init__(self, workdir: Path, m: Matrix) -> None:
        binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("nginx is not installed (CI must install Debian's nginx for the mTLS comparison)")
            pytest.skip("nginx is not installed (apt-get install nginx) - the mTLS verdicts are not compared")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(
            textwrap.dedent(f"""
            daemon off;
            master_process off;
            worker_processes 1;
            pid {workdir}/nginx.pid;
            error_log {workdir}/error.log info;
            events {{ worker_connections 256; }}
            http {{
                access_log off;
                client_body_temp_path {workdir}/tmp/body;
                proxy_temp_path {workdir}/tmp/proxy;
                fastcgi_temp_path {workdir}/tmp/fastcgi;
                uwsgi_temp_path {workdir}/tmp/uwsgi;
                scgi_temp_path {workdir}/tmp/scgi;
                server {{
                    listen 127.0.0.1:{self.port} ssl;
                    server_name localhost;
                    ssl_protocols TLSv1.2 TLSv1.3;
                    ssl_certificate {m.server_cert};
                    ssl_certificate_key {m.server_key};
                    ssl_client_certificate {m.trust_store};
                    ssl_verify_client on;
                    ssl_verify_depth {VERIFY_DEPTH};
                    ssl_crl {m.all_crls_pem};
                    location / {{ return 200 "ok\\n"; }}
                }}
            }}
            """)
        )
        self.error_log = workdir / "error.log"
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(workdir), "-e", str(self.error_log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_port(self.port, self.proc)
        except Exception:
            _, err = self.proc.communicate(timeout=5)
            raise RuntimeError(f"nginx did not start: {err.decode(errors='replace')}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


# -- clients ---------------------------------------------------------------------------------------


def python_get(port: int, ctx: ssl.SSLContext, *, server_hostname: str = "localhost", data: bytes = REQUEST) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=server_hostname) as tls:
            tls.sendall(data)
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def verdict(port: int, m: Matrix, case: Case, version: str) -> tuple[bool, str]:
    """Accepted means an HTTP 200; a refused handshake, a reset or nginx's 400 all mean refused."""
    try:
        answer = python_get(port, client_context(m, case, version=version))
    except (OSError, ssl.SSLError) as e:
        return False, f"{type(e).__name__}: {e}"
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    return status.startswith("HTTP/1.1 200"), status


def curl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *map(str, args)], capture_output=True, text=True)


def s_client(port: int, m: Matrix, case: Case, *extra: str | Path) -> str:
    assert case.cert is not None and case.key is not None
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         "-CAfile", str(m.server_root), "-cert", str(case.cert), "-cert_chain", str(case.cert),
         "-key", str(case.key), "-ign_eof",
         *map(str, extra)],
        input=REQUEST, capture_output=True, timeout=20,
    )  # fmt: skip
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def xfcc(headers: list[tuple[str, str]]) -> list[str]:
    return [v for k, v in headers if k.lower() == "x-forwarded-client-cert"]


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    return build_matrix(tmp_path_factory.mktemp("mtls-e2e") / "certs")


@pytest.fixture(scope="module")
def backend() -> Iterator[EchoBackend]:
    b = EchoBackend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, matrix: Matrix, backend: EchoBackend) -> Iterator[MtlsSidecar]:
    s = MtlsSidecar(tmp_path_factory.mktemp("sidecar"), backend, matrix.policy_yaml())
    yield s
    s.close()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, matrix: Matrix) -> Iterator[Nginx]:
    n = Nginx(tmp_path_factory.mktemp("nginx"), matrix)
    yield n
    n.close()


@pytest.fixture
def new_sidecar(tmp_path: Path, backend: EchoBackend) -> Iterator[Any]:
    started: list[MtlsSidecar] = []

    def start(mtls_yaml: str, *sets: str) -> MtlsSidecar:
        s = MtlsSidecar(tmp_path / f"sc{len(started)}", backend, mtls_yaml, sets)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


# -- the verdict matrix ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_sidecar_verdicts_and_explained_failures(
    sidecar: MtlsSidecar, backend: EchoBackend, matrix: Matrix, version: str
) -> None:
    requests_before, connections_before = len(backend.requests), backend.connections
    refusals_before = len(sidecar.refusals())
    results = {c.name: verdict(sidecar.port, matrix, c, version) for c in matrix.cases}
    wrong = {n: r for n, r in results.items() if r[0] is not matrix.case(n).accepted}
    assert not wrong, wrong
    accepted = [c for c in matrix.cases if c.accepted]
    # refused clients never reach the backend: not a request, not even a connection (lazy strategy)
    assert len(backend.requests) - requests_before == len(accepted)
    assert backend.connections - connections_before == len(accepted)
    for case, seen in zip(accepted, backend.requests[requests_before:], strict=True):
        assert case.cert is not None
        leaf = pki.x509.load_pem_x509_certificates(case.cert.read_bytes())[0]
        (value,) = xfcc(seen["headers"])
        assert value.startswith(f"Hash={ClientIdentity(leaf).sha256};"), (case.name, value)
    # each refusal explained once in mitmproxy's event log, with the OpenSSL error and the certificate
    deadline = time.monotonic() + 5
    while len(sidecar.refusals()) - refusals_before < len(matrix.cases) - len(accepted) and time.monotonic() < deadline:
        time.sleep(0.05)
    refusals = sidecar.refusals()[refusals_before:]
    expected = sorted(c.reason or "" for c in matrix.cases if not c.accepted)
    assert sorted(r["reason"] for r in refusals) == expected
    revoked = next(r for r in refusals if r["subject"] == "CN=revoked client")
    assert revoked["verify_error"] == "certificate revoked" and revoked["sha256"] and revoked["serial"]
    assert revoked["issuer"] == "CN=mtls test client intermediate"


def test_failures_are_counted_by_reason(sidecar: MtlsSidecar, matrix: Matrix) -> None:
    verdict(sidecar.port, matrix, matrix.case("expired"), "1.3")
    time.sleep(0.2)
    metrics = sidecar.metrics()
    key = 'sidegate_rejections_total{enforced="true",plugin="client_tls",reason="client_cert_expired"}'
    assert metrics[key] >= 1


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_same_verdicts_as_nginx_on_the_whole_matrix(
    sidecar: MtlsSidecar, nginx: Nginx, matrix: Matrix, version: str
) -> None:
    table = []
    for case in matrix.cases:
        ours, ours_detail = verdict(sidecar.port, matrix, case, version)
        theirs, theirs_detail = verdict(nginx.port, matrix, case, version)
        table.append((case.name, case.accepted, ours, theirs, ours_detail, theirs_detail))
    assert [row[0] for row in table] == CASE_NAMES
    mismatches = [row for row in table if not row[1] is row[2] is row[3]]
    assert not mismatches, "\n".join(
        f"{n}: expected {e}, sidegate {o} ({od}), nginx {t} ({td})" for n, e, o, t, od, td in mismatches
    )


# -- clients, protocols, sessions ------------------------------------------------------------------


def test_curl_over_http1_and_http2(sidecar: MtlsSidecar, backend: EchoBackend, matrix: Matrix) -> None:
    case = matrix.case("via_intermediate_sent")
    base = ["--cacert", matrix.server_root, "--cert", case.cert, "--key", case.key]  # type: ignore[list-item]
    url = f"https://localhost:{sidecar.port}/who"
    for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
        for tls in (("--tlsv1.2", "--tls-max", "1.2"), ("--tlsv1.3",)):
            out = curl(*base, flag, *tls, "-o", "/dev/null", "-w", "%{http_code} %{http_version}", url)
            assert out.stdout == f"200 {version}", (flag, tls, out.stderr)
            (value,) = xfcc(backend.headers())
            assert 'Subject="CN=intermediate client";URI=spiffe://t/c' in value
    refused = curl("--cacert", matrix.server_root, url)
    assert refused.returncode != 0


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_resumes_sessions(
    sidecar: MtlsSidecar, backend: EchoBackend, matrix: Matrix, tmp_path: Path, version: str
) -> None:
    case = matrix.case("ecdsa_leaf_from_root")
    session = tmp_path / "session.pem"
    first = s_client(sidecar.port, matrix, case, version, "-sess_out", session)
    assert re.search(r"^New, TLSv1\.[23]", first, re.M), first
    assert "HTTP/1.1 200" in first and "Verify return code: 0 (ok)" in first
    again = s_client(sidecar.port, matrix, case, version, "-sess_in", session)
    assert re.search(r"^Reused, TLSv1\.[23]", again, re.M), again
    assert "HTTP/1.1 200" in again
    (value,) = xfcc(backend.headers())  # the identity survives resumption (leaf only)
    assert 'Subject="CN=ecdsa client"' in value


def test_session_lifetime_bounds_resumption(new_sidecar: Any, matrix: Matrix, tmp_path: Path) -> None:
    sc = new_sidecar(matrix.policy_yaml(session_timeout="1s"))
    case = matrix.case("ecdsa_leaf_from_root")
    session = tmp_path / "session.pem"
    assert "HTTP/1.1 200" in s_client(sc.port, matrix, case, "-tls1_3", "-sess_out", session)
    time.sleep(2.5)
    again = s_client(sc.port, matrix, case, "-tls1_3", "-sess_in", session)
    assert re.search(r"^New, TLSv1\.3", again, re.M) and "HTTP/1.1 200" in again, again


def test_revocation_by_hot_reload_ends_sessions_too(new_sidecar: Any, matrix: Matrix, tmp_path: Path) -> None:
    crls = tmp_path / "crls.pem"
    shutil.copy(matrix.crls_pem, crls)
    sc = new_sidecar(matrix.policy_yaml(crls=f"[{crls}, {matrix.crl_der}]", session_timeout="1h"))
    case = matrix.write_client("soon_revoked", pki.create_client_cert(matrix.cas["inter"], "soon revoked"))
    session = tmp_path / "session.pem"
    assert "HTTP/1.1 200" in s_client(sc.port, matrix, case, "-tls1_3", "-sess_out", session)
    assert case.cert is not None
    serial = pki.x509.load_pem_x509_certificates(case.cert.read_bytes())[0].serial_number
    pem_crls = CrlFile.load(str(matrix.crls_pem)).crls
    old_inter_crl = pem_crls[1]
    revoked = [x.serial_number for x in old_inter_crl] + [serial]
    new_crls = [pem_crls[0], pki.create_crl(matrix.cas["inter"], revoked, number=2), *pem_crls[2:]]
    pki.write_crls(crls, new_crls, force=True)
    sc.policy_file.write_text(sc.policy_file.read_text() + "# CRL updated\n")
    sc.wait_for_generation(2)
    again = s_client(sc.port, matrix, case, "-tls1_3", "-sess_in", session)
    assert not re.search(r"^Reused", again, re.M), again
    assert "HTTP/1.1 200" not in again
    assert any(r["reason"] == "client_cert_revoked" and r["subject"] == "CN=soon revoked" for r in sc.refusals())


# -- plain HTTP, identity header -------------------------------------------------------------------


def test_plain_http_on_the_tls_port_is_refused(sidecar: MtlsSidecar, backend: EchoBackend) -> None:
    before = (len(backend.requests), backend.connections)
    answer = raw(sidecar.port, b"GET /who HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Client-Cert: Hash=00\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    assert json.loads(body) == {"message": "The plain HTTP request was sent to HTTPS port"}
    assert (len(backend.requests), backend.connections) == before


def test_hostile_subject_and_spoofed_header_cannot_reach_the_backend(
    sidecar: MtlsSidecar, backend: EchoBackend, matrix: Matrix
) -> None:
    name = pki.x509_name('evil\r\nx-injected: 1\r\n;Subject="CN=admin"', organization='Quote "Co", Ltd\n')
    cred = pki.create_client_cert(matrix.cas["inter"], name, uris=["spiffe://x/a\r\nx-injected: 2"])
    case = matrix.write_client("hostile", cred)
    spoof = (
        b"GET /who HTTP/1.1\r\nHost: localhost\r\n"
        b'X-Forwarded-Client-Cert: Hash=00;Subject="CN=admin"\r\n'
        b"x-forwarded-client-cert: By=spoof\r\nConnection: close\r\n\r\n"
    )
    answer = python_get(sidecar.port, client_context(matrix, case), data=spoof)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    headers = backend.headers()
    assert not [k for k, _ in headers if k.lower().startswith("x-injected")]
    (value,) = xfcc(headers)
    assert value.isascii() and value.isprintable()
    identity = ClientIdentity(cred.cert)
    assert value.startswith(f"Hash={identity.sha256};Serial={identity.serial_hex};Subject=")
    assert (
        'Subject="CN=evil\\0D\\0Ax-injected: 1\\0D\\0A\\;Subject=\\"CN=admin\\",O=Quote \\"Co\\"\\, Ltd\\0A"' in value
    )
    assert "URI=spiffe://x/a%0D%0Ax-injected:%202" in value


def test_hosts_with_their_own_rules(new_sidecar: Any, matrix: Matrix) -> None:
    # keep_host_header: the client's Host reaches sidegate, so it must not contradict the SNI
    sc = new_sidecar(
        matrix.policy_yaml(hosts="{public.localhost: {client_certificates: off}}"), "keep_host_header=true"
    )
    resolve = ["--resolve", f"public.localhost:{sc.port}:127.0.0.1", "--resolve", f"localhost:{sc.port}:127.0.0.1"]
    public = curl(*resolve, "--cacert", matrix.server_root, "-o", "/dev/null", "-w", "%{http_code}",
                  f"https://public.localhost:{sc.port}/who")  # fmt: skip
    assert public.stdout == "200", public.stderr
    strict = curl(*resolve, "--cacert", matrix.server_root, f"https://localhost:{sc.port}/who")
    assert strict.returncode != 0
    fronted = curl(*resolve, "--cacert", matrix.server_root, "-H", "Host: localhost", "-w", "\n%{http_code}",
                   f"https://public.localhost:{sc.port}/who")  # fmt: skip
    assert fronted.stdout.endswith("\n421"), fronted.stdout
