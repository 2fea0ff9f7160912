"""HTTPS benchmark: plain ``mitmdump`` with TLS to the client versus ``sidegate run`` with mTLS required.

Issue 6, item 11: sidegate with ``kind: ClientTls`` (``client_certificates: required``, trust store,
CRLs) must keep at least 90 % of plain mitmdump's TLS throughput, measured in the same run. Both
proxies present the same server certificate (a development PKI made with ``addons/pki.py`` in a
temporary folder) in reverse mode in front of ``bench/backend.py``; only sidegate asks for and
verifies a client certificate.

    .venv/bin/python bench/mtls.py                 # 5 rounds x 4 modes x 2 proxies x 5 s: 10-13 min here
    .venv/bin/python bench/mtls.py --quick         # 2 rounds x 3 s, about 2 min
    .venv/bin/python bench/mtls.py --tls 1.2 --rounds 4 --duration 10

Modes (requests/s counts only ``200`` answers, except ``s_time-new``, see below):

- ``new``: a new TCP connection and full TLS handshake for every request (``--parallel`` client
  threads, ``Connection: close``), Python's ``ssl`` verifying the server against the dev root CA.
- ``resume``: the same, resuming the previous TLS session (tickets / session ids); the share of
  resumed handshakes is recorded.
- ``keepalive``: ``--connections`` persistent HTTP/1.1 connections (asyncio), one request in flight
  on each; reconnections are counted (0 means the connections really stayed alive).
- ``s_time-new``: ``openssl s_time -new -www /mtls-bench`` (``--parallel`` processes at once). It
  cannot see statuses, so its bytes read per connection are compared with the size of one ``200``
  answer of that proxy. ``s_time -reuse`` is only run as a check: it never resumes against mitmproxy
  (see ``bench/mtls.md``).

Every port is a free 127.0.0.1 port; every wait, retry and load run is bounded in count and time;
every process started here is stopped in ``finally`` (also on Ctrl-C / SIGTERM). Results go to
``bench/results/mtls.json``; a table is printed. Exit status 1 if a check or measurement failed.
The load client is this file run with ``--client`` (a separate process, so its CPU is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VENV_BIN = ROOT / ".venv" / "bin"
LOOPBACK = "127.0.0.1"
SERVER_NAME = "localhost"  # SNI and the name checked in the server certificate
PATH = "/mtls-bench"
BAR = 0.90
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXIES = ("mitmdump", "sidegate")
MODES = ("new", "resume", "keepalive", "s_time-new")
BACKEND_BODY = b'{"ok":true}\n'  # what bench/backend.py answers
IO_TIMEOUT = 5.0  # every socket operation of the load client and the checks
MAX_LATENCIES = 200_000  # samples kept per client run (bounded memory)


# -- load client (runs in its own process: ``mtls.py --client MODE ...``) -------------------------


def client_context(cafile: str, cert: str | None, key: str | None, tls: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)  # verifies the chain and the name "localhost"
    if tls:
        version = ssl.TLSVersion.TLSv1_3 if tls == "1.3" else ssl.TLSVersion.TLSv1_2
        ctx.minimum_version = ctx.maximum_version = version
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def request_bytes(close: bool) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return (
        b"GET "
        + PATH.encode()
        + b" HTTP/1.1\r\nHost: localhost\r\nUser-Agent: sidegate-mtls-bench\r\n"
        + extra
        + b"\r\n"
    )


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content-length, connection: close) of a response header block."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    status, length, close = int(parts[1]), 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and b"close" in value.lower():
            close = True
    return status, length, close


def read_response(sock: ssl.SSLSocket) -> tuple[int, bytes, bool]:
    """Read one response (header block, then content-length bytes) from a blocking TLS socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"connection closed after {len(buf)} bytes of response")
        buf += data
        if len(buf) > 65536:
            raise ValueError("response header block over 64 KB")
    head, _, body = buf.partition(b"\r\n\r\n")
    status, length, close = parse_head(head)
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed in the body")
        body += data
    return status, body[:length], close


class Tally:
    """Counters of one client run, shared by its threads or tasks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0  # 200 answers completed within the run
        self.non_200: dict[str, int] = {}
        self.errors = 0
        self.error_samples: list[str] = []
        self.late = 0  # answers completed after the deadline (not counted)
        self.connections = 0  # TCP+TLS connections opened
        self.handshakes = 0
        self.resumed = 0
        self.latencies: list[float] = []

    def answer(self, status: int, latency: float, on_time: bool) -> None:
        with self.lock:
            if not on_time:
                self.late += 1
            elif status == 200:
                self.ok += 1
                if len(self.latencies) < MAX_LATENCIES:
                    self.latencies.append(latency)
            else:
                self.non_200[str(status)] = self.non_200.get(str(status), 0) + 1

    def error(self, e: BaseException) -> None:
        with self.lock:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{type(e).__name__}: {e}"[:300])

    def result(self, mode: str, seconds: float, workers: int) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

        return {
            "mode": mode,
            "workers": workers,
            "seconds": round(seconds, 3),
            "ok_200": self.ok,
            "rps": round(self.ok / seconds, 1) if seconds > 0 else 0.0,
            "non_200": self.non_200,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "late_answers": self.late,
            "connections_opened": self.connections,
            "handshakes": self.handshakes,
            "resumed_handshakes": self.resumed,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        }


def connection_worker(
    ctx: ssl.SSLContext, port: int, deadline: float, resume: bool, tally: Tally, request: bytes
) -> None:
    """One request per TCP+TLS connection until the deadline; with ``resume`` the last session is offered."""
    session: ssl.SSLSession | None = None
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            with socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw, server_hostname=SERVER_NAME, session=session) as tls:
                    with tally.lock:
                        tally.connections += 1
                        tally.handshakes += 1
                        tally.resumed += int(tls.session_reused)
                    tls.sendall(request)
                    status, _, _ = read_response(tls)
                    if resume:
                        session = tls.session  # after the read: TLS 1.3 tickets arrive with the answer
            t1 = time.monotonic()
            tally.answer(status, t1 - t0, t1 <= deadline)
        except (OSError, ssl.SSLError, ValueError) as e:
            tally.error(e)
            session = None
            time.sleep(0.02)  # no hot loop against a broken proxy; bounded by the deadline


async def keepalive_worker(ctx: ssl.SSLContext, port: int, deadline: float, tally: Tally, request: bytes) -> None:
    """One persistent connection, one request in flight, until the deadline; reconnects are counted."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while time.monotonic() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(LOOPBACK, port, ssl=ctx, server_hostname=SERVER_NAME), IO_TIMEOUT
                    )
                    tally.connections += 1
                    tally.handshakes += 1
                    obj = writer.get_extra_info("ssl_object")
                    tally.resumed += int(bool(obj and obj.session_reused))
                assert reader is not None
                t0 = time.monotonic()
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
                status, length, close = parse_head(head[:-4])
                if length:
                    await asyncio.wait_for(reader.readexactly(length), IO_TIMEOUT)
                t1 = time.monotonic()
                tally.answer(status, t1 - t0, t1 <= deadline)
                if close:  # the proxy does not keep the connection: reopen (counted above)
                    writer.close()
                    writer = None
            except (OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError) as e:  # fmt: skip
                tally.error(e)
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.02)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


async def keepalive_run(ctx: ssl.SSLContext, port: int, seconds: float, workers: int, tally: Tally) -> float:
    start = time.monotonic()
    deadline = start + seconds
    request = request_bytes(close=False)
    tasks = [asyncio.create_task(keepalive_worker(ctx, port, deadline, tally, request)) for _ in range(workers)]
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + IO_TIMEOUT + 10)
    return seconds


def client_main(args: argparse.Namespace) -> int:
    ctx = client_context(args.cafile, args.cert, args.key, args.tls)
    tally = Tally()
    if args.client == "keepalive":
        seconds = asyncio.run(keepalive_run(ctx, args.port, args.seconds, args.workers, tally))
    else:
        deadline = time.monotonic() + args.seconds
        request = request_bytes(close=True)
        threads = [
            threading.Thread(
                target=connection_worker,
                args=(ctx, args.port, deadline, args.client == "resume", tally, request),
                daemon=True,
            )
            for _ in range(args.workers)
        ]
        for t in threads:
            t.start()
        for t in threads:  # each loop ends at the deadline; a socket op waits at most IO_TIMEOUT
            t.join(args.seconds + 3 * IO_TIMEOUT + 5)
        seconds = args.seconds
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = tally.result(args.client, seconds, args.workers)
    out["client_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
    print(json.dumps(out))
    return 0


# -- processes -------------------------------------------------------------------------------------


class Children:
    """Every process started here, so ``finally`` can end each one by its pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "wb") if log else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception as e:  # keep ending the others
                print(f"mtls bench: could not stop pid {proc.pid}: {e}", file=sys.stderr)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def free_port(taken: set[int]) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError("no free port found in 50 tries")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {LOOPBACK}:{port} after {timeout:.0f}s")


def cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_seconds() -> float | None:
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def children_cpu() -> float:
    """CPU of every child reaped so far (the load client, s_time processes)."""
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def cpu_probe_ms() -> float:
    """Wall ms of a fixed single-core job (SHA-256 of 32 MB): how fast the host runs us right now.

    The VM shares its host; on a busy host the same job takes longer while the guest sees no other
    process. Recorded before and after each measurement as a diagnostic (not used to drop runs).
    """
    block = b"\x5a" * (1 << 20)
    t0 = time.perf_counter()
    h = hashlib.sha256()
    for _ in range(32):
        h.update(block)
    return round((time.perf_counter() - t0) * 1000, 1)


def wait_quiet(max_wait: float, threshold: float = 0.15, windows: int = 3) -> float:
    """Wait at most ``max_wait`` s for ``windows`` 1-s windows with less than ``threshold`` core busy."""
    start = time.monotonic()
    quiet = 0
    while time.monotonic() - start < max_wait:
        b0 = system_busy_seconds()
        time.sleep(1.0)
        b1 = system_busy_seconds()
        if b0 is None or b1 is None:
            return 0.0
        quiet = quiet + 1 if (b1 - b0) < threshold else 0
        if quiet >= windows:
            break
    return round(time.monotonic() - start, 1)


def busy_processes(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], ours: set[int]
) -> list[Any]:
    used = []
    for pid, (cmd, cpu) in after.items():
        if pid in ours:
            continue
        delta = cpu - before.get(pid, (cmd, 0.0))[1]
        if delta >= 0.2:
            used.append((round(delta, 2), pid, cmd))
    return [[pid, cmd, delta] for delta, pid, cmd in sorted(used, reverse=True)[:5]]


def process_table() -> dict[int, tuple[str, float]]:
    table: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (cmd[:100], (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# -- setup -----------------------------------------------------------------------------------------


def first_certificate(pem: str) -> str:
    """The first PEM certificate block of a chain file (the leaf)."""
    end = "-----END CERTIFICATE-----"
    return pem[pem.index("-----BEGIN CERTIFICATE-----") : pem.index(end) + len(end)] + "\n"


class Setup:
    """The dev PKI, the sidegate policy and the two proxies' command lines, in a temporary folder."""

    def __init__(self, work: Path, backend_port: int, key_type: str) -> None:
        sys.path.insert(0, str(ROOT))
        from addons import pki as pki_module  # the project's own PKI builder

        self.pki = pki_module.create_dev_pki(work / "pki", key_type=key_type)  # type: ignore[arg-type]
        p = self.pki
        self.work = work
        self.backend_port = backend_port
        # s_time's -cert loads the leaf only (no way to send the intermediate), so the trust store holds
        # the root and the intermediate: every client is then verified through the same chain.
        self.trust = work / "pki" / "clients-ca-bundle.pem"
        self.trust.write_bytes(p.clients_ca.read_bytes() + p.intermediate_ca.read_bytes())
        self.client_leaf = work / "pki" / "client-leaf.pem"
        self.client_leaf.write_text(first_certificate(p.client_cert.read_text()))
        # mitmproxy's certs option: "[domain=]path", the PEM holding the chain (leaf first) and the key.
        self.combined = work / "pki" / "server-combined.pem"
        self.combined.write_bytes(p.server_cert.read_bytes() + p.server_key.read_bytes())
        server_der = ssl.PEM_cert_to_DER_cert(first_certificate(p.server_cert.read_text()))
        self.server_der_sha256 = hashlib.sha256(server_der).hexdigest()
        self.policies = work / "policies"
        self.policies.mkdir()
        self.policy_text = (
            "kind: ClientTls\n"
            f"server_certificate: {p.server_cert}\n"
            f"server_key: {p.server_key}\n"
            f"trust_store: [{self.trust}]\n"
            f"crls: [{p.clients_crl}]\n"
            "client_certificates: required\n"
        )
        (self.policies / "mtls.yaml").write_text(self.policy_text)
        self.confdir = work / "mitmproxy-confdir"  # mitmproxy's own CA, kept out of ~/.mitmproxy

    def argv(self, proxy: str, port: int | str, backend_port: int | str | None = None) -> list[str]:
        reverse = f"reverse:http://{LOOPBACK}:{backend_port or self.backend_port}"
        if proxy == "mitmdump":
            return [
                str(VENV_BIN / "mitmdump"), "--mode", reverse, "--listen-host", LOOPBACK, "--listen-port", str(port),
                "-q", "--set", "connection_strategy=lazy", "--set", f"certs=*={self.combined}",
                "--set", f"confdir={self.confdir}",
            ]  # fmt: skip
        return [
            str(VENV_BIN / "sidegate"), "run", "--config", str(ROOT / "mitm_config.yaml"),
            "--set", f"mode={reverse}",
            "--set", f"listen_host={LOOPBACK}",
            "--set", f"listen_port={port}",
            "--set", f"sidegate_policies={self.policies}",
            "--set", "sidegate_admin=",
            "--set", "sidegate_access_log=/dev/null",
            "--set", "sidegate_reload_interval=0",
            "--set", f"confdir={self.confdir}",
        ]  # fmt: skip

    def client_args(self, proxy: str, full_chain: bool = True) -> list[str]:
        out = ["--cafile", str(self.pki.root_ca)]
        if proxy == "sidegate":
            cert = self.pki.client_cert if full_chain else self.client_leaf
            out += ["--cert", str(cert), "--key", str(self.pki.client_key)]
        return out


# -- checks ----------------------------------------------------------------------------------------


def tls_get(
    port: int, cafile: Path, cert: Path | None = None, key: Path | None = None, tls: str | None = None,
    http10: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """One request on a fresh, verified TLS connection; what happened, never raises."""
    ctx = client_context(str(cafile), str(cert) if cert else None, str(key) if key else None, tls)
    out: dict[str, Any] = {"tls": tls or "default", "client_cert": cert.name if cert else None}
    try:
        with socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as s:
                out["version"], out["cipher"] = s.version(), (s.cipher() or ("",))[0]
                der = s.getpeercert(binary_form=True) or b""
                out["server_cert_sha256"] = hashlib.sha256(der).hexdigest()
                if http10:  # what s_time sends: the answer is read to the end of the connection
                    s.sendall(b"GET " + PATH.encode() + b" HTTP/1.0\r\n\r\n")
                    data = b""
                    while len(data) < 1 << 20:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    out["status"] = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else None
                    out["bytes"] = len(data)
                    out["body"] = data.partition(b"\r\n\r\n")[2].decode(errors="replace")
                else:
                    s.sendall(request_bytes(close=True))
                    status, body, _ = read_response(s)
                    out["status"], out["body"] = status, body.decode(errors="replace")
    except (OSError, ssl.SSLError, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"[:300]
    return out


def refused(r: dict[str, Any]) -> bool:
    """No HTTP answer at all: the handshake (or, in TLS 1.3, the first read) failed."""
    return "error" in r and r.get("status") is None


def s_time_argv(port: int, mode: str, seconds: int, client: list[str], tls: str | None) -> list[str]:
    argv = ["openssl", "s_time", "-connect", f"{LOOPBACK}:{port}", f"-{mode}", "-www", PATH, "-time", str(seconds)]
    opts = dict(zip(client[::2], client[1::2], strict=True))
    argv += ["-CAfile", opts["--cafile"]]  # s_time does not fail on verification errors; the checks do
    if "--cert" in opts:
        argv += ["-cert", opts["--cert"], "-key", opts["--key"]]
    if tls:
        argv.append("-tls1_3" if tls == "1.3" else "-tls1_2")
    return argv


_S_TIME = re.compile(r"(\d+) connections in [\d.]+s; [\d.]+ connections/user sec, bytes read (\d+)")


def parse_s_time(text: str) -> dict[str, Any]:
    m = list(_S_TIME.finditer(text))
    if not m:
        raise ValueError(f"unexpected s_time output: {text[-300:]!r}")
    # One progress character per connection: 'r' resumed, '*' (or 't', '3') a full handshake.
    marks = "".join(line for line in text.splitlines() if line and set(line) <= set("r*t3"))
    return {"connections": int(m[-1].group(1)), "bytes": int(m[-1].group(2)), "resumed": marks.count("r")}


def run_s_time(
    children: Children, port: int, mode: str, seconds: int, client: list[str], tls: str | None, procs: int,
    work: Path,
) -> dict[str, Any]:  # fmt: skip
    """``procs`` s_time processes at once; connections per second over the wall time of all of them."""
    argv = s_time_argv(port, mode, seconds, client, tls)
    logs = [work / f"s_time-{i}.out" for i in range(procs)]
    started = time.monotonic()
    running = [children.start(argv, log) for log in logs]
    try:
        for p in running:
            p.wait(timeout=max(0.0, started + seconds + 30 - time.monotonic()))
    finally:
        for p in running:
            children.stop(p)
    wall = time.monotonic() - started
    parts = [parse_s_time(log.read_text(errors="replace")) for log in logs]
    codes = [p.returncode for p in running]
    conns = sum(p["connections"] for p in parts)
    return {
        "argv": argv,
        "processes": procs,
        "exit_codes": codes,
        "seconds": round(wall, 3),
        "connections": conns,
        "bytes": sum(p["bytes"] for p in parts),
        "bytes_per_connection": round(sum(p["bytes"] for p in parts) / conns, 2) if conns else 0,
        "resumed": sum(p["resumed"] for p in parts),
        "rps": round(conns / wall, 1) if wall > 0 else 0.0,
    }


def run_client(
    mode: str, port: int, seconds: float, workers: int, client: list[str], tls: str | None
) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--client", mode, "--port", str(port),
            "--seconds", str(seconds), "--workers", str(workers), *client]  # fmt: skip
    if tls:
        argv += ["--tls", tls]
    r = subprocess.run(argv, capture_output=True, timeout=seconds + 4 * IO_TIMEOUT + 30, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"load client failed ({r.returncode}): {r.stderr.decode(errors='replace')[-800:]}")
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def verify(setup: Setup, proxy: str, port: int, tls: str | None, full: bool) -> dict[str, Any]:
    """Before measuring: the server certificate, 200 from the backend, sidegate requiring a certificate."""
    p = setup.pki
    checks: dict[str, Any] = {}
    problems: list[str] = []
    cert = (p.client_cert, p.client_key) if proxy == "sidegate" else (None, None)
    ok = tls_get(port, p.root_ca, *cert, tls=tls)
    checks["with_cert" if proxy == "sidegate" else "no_client_cert"] = ok
    if ok.get("status") != 200 or ok.get("body", "").encode() != BACKEND_BODY:
        problems.append(f"{proxy}: GET {PATH} gave {ok}")
    if ok.get("server_cert_sha256") != setup.server_der_sha256:
        problems.append(f"{proxy}: presents another server certificate ({ok.get('server_cert_sha256')})")
    if proxy == "sidegate":
        leaf = tls_get(port, p.root_ca, setup.client_leaf, p.client_key, tls=tls)
        checks["with_leaf_only"] = leaf  # what s_time sends
        if leaf.get("status") != 200:
            problems.append(f"sidegate: leaf-only client certificate gave {leaf}")
        versions = ("1.2", "1.3") if full else (tls,)
        for v in versions:
            no_cert = tls_get(port, p.root_ca, tls=v)
            checks[f"without_cert_tls{v or ''}"] = no_cert
            if not refused(no_cert):
                problems.append(f"sidegate: a client without certificate got an answer (TLS {v}): {no_cert}")
        if full:
            revoked = tls_get(port, p.root_ca, p.revoked_client_cert, p.revoked_client_key, tls=tls)
            checks["revoked_cert"] = revoked
            if not refused(revoked):
                problems.append(f"sidegate: a revoked client certificate got an answer: {revoked}")
    # What one 200 answer to s_time's request (HTTP/1.0, read to the end) weighs on this proxy.
    one = tls_get(port, p.root_ca, *((p.client_cert, p.client_key) if proxy == "sidegate" else (None, None)),
                  tls=tls, http10=True)  # fmt: skip
    checks["http10_answer"] = {k: one.get(k) for k in ("status", "bytes", "error")}
    if one.get("status") != 200:
        problems.append(f"{proxy}: HTTP/1.0 probe gave {one}")
    checks["problems"] = problems
    return checks


# -- measuring -------------------------------------------------------------------------------------


def measure(
    children: Children, setup: Setup, proxy: str, proc: subprocess.Popen[bytes], port: int, mode: str,
    backend: subprocess.Popen[bytes], args: argparse.Namespace, answer_bytes: int | None, ours: set[int],
) -> dict[str, Any]:  # fmt: skip
    waited = wait_quiet(args.quiet_wait)
    probe_before = cpu_probe_ms()
    client = setup.client_args(proxy, full_chain=mode != "s_time-new")
    table0 = process_table()
    cpu0, bcpu0, ccpu0, sys0 = cpu_seconds(proc.pid), cpu_seconds(backend.pid), children_cpu(), system_busy_seconds()
    if mode == "s_time-new":
        res = run_s_time(children, port, "new", args.duration, client, args.tls, args.parallel, setup.work)
        requests = res["connections"]
        ok = res["connections"] if answer_bytes and abs(res["bytes_per_connection"] - answer_bytes) <= 0.5 else 0
        res["answer_bytes_expected"] = answer_bytes
        res["all_answers_200_size"] = bool(ok)  # every connection read exactly one 200 answer's bytes
        res["ok_200"] = ok
        res["errors"] = sum(1 for c in res["exit_codes"] if c != 0)
    else:
        workers = args.connections if mode == "keepalive" else args.parallel
        res = run_client(mode, port, args.duration, workers, client, args.tls)
        requests = res["ok_200"]
    cpu1, bcpu1, ccpu1, sys1 = cpu_seconds(proc.pid), cpu_seconds(backend.pid), children_cpu(), system_busy_seconds()
    alive = proc.poll() is None
    out: dict[str, Any] = {"proxy": proxy, "mode": mode, "waited_for_quiet_s": waited, **res}
    out["cpu_probe_ms"] = [probe_before, cpu_probe_ms()]
    out["proxy_alive_after"] = alive
    if None not in (cpu0, cpu1, bcpu0, bcpu1, sys0, sys1):
        proxy_cpu = cpu1 - cpu0  # type: ignore[operator]
        backend_cpu = bcpu1 - bcpu0  # type: ignore[operator]
        client_cpu = ccpu1 - ccpu0
        busy = sys1 - sys0  # type: ignore[operator]
        seconds = float(res["seconds"])
        out["proxy_cpu_s"] = round(proxy_cpu, 2)
        out["proxy_cpu_share"] = round(proxy_cpu / seconds, 2) if seconds else None
        out["proxy_cpu_us_per_req"] = round(proxy_cpu * 1e6 / requests, 1) if requests else None
        out["backend_cpu_s"] = round(backend_cpu, 2)
        out["client_cpu_s"] = round(client_cpu, 2)
        out["other_cpu_s"] = round(busy - proxy_cpu - backend_cpu - client_cpu, 2)
        # More than 10 % of one core used by something else during the run: another session's load.
        out["disturbed"] = out["other_cpu_s"] > 0.1 * seconds
        out["foreign_processes"] = busy_processes(table0, process_table(), ours)
    out["rss_mb"] = rss_mb(proc.pid)
    # A measurement is valid when every request of the run was a 200 and the proxy survived.
    problems = []
    if not alive:
        problems.append("proxy exited")
    if mode == "s_time-new":
        if not res["all_answers_200_size"]:
            problems.append(f"bytes per connection {res['bytes_per_connection']} != one 200 answer ({answer_bytes})")
        if res["errors"]:
            problems.append(f"s_time exit codes {res['exit_codes']}")
    else:
        if res["errors"] or res["non_200"]:
            problems.append(f"errors {res['errors']} {res['error_samples'][:2]}, non-200 {res['non_200']}")
        if mode == "keepalive" and res["connections_opened"] != res["workers"]:
            problems.append(f"keep-alive: {res['connections_opened']} connections for {res['workers']} workers")
        if mode == "resume" and res["handshakes"] and res["resumed_handshakes"] < 0.9 * res["handshakes"]:
            problems.append(f"resume: only {res['resumed_handshakes']}/{res['handshakes']} handshakes resumed")
    out["problems"] = problems
    return out


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def final_run(measurements: list[dict[str, Any]], proxy: str, mode: str, rnd: int) -> dict[str, Any] | None:
    """The measurement kept for one proxy, mode and round (the last attempt)."""
    for m in measurements:
        if m["proxy"] == proxy and m["mode"] == mode and m["round"] == rnd and m.get("final"):
            return m
    return None


def summarise(measurements: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for mode in MODES:
        row: dict[str, Any] = {}
        for proxy in PROXIES:
            every = [m for m in measurements if m["proxy"] == proxy and m["mode"] == mode and m.get("final")]
            valid = [m for m in every if not m["problems"]]
            clean = [m for m in valid if not m.get("disturbed")]
            use = clean or valid
            row[proxy] = {
                "rps_median": median([m["rps"] for m in use]),
                "per_round": [m["rps"] for m in every],
                "disturbed_rounds": [m["round"] for m in every if m.get("disturbed")],
                "invalid_rounds": [m["round"] for m in every if m["problems"]],
                "used_rounds": [m["round"] for m in use],
                "proxy_cpu_us_per_req": median(
                    [m["proxy_cpu_us_per_req"] for m in use if m.get("proxy_cpu_us_per_req")]
                ),
                "p50_ms": median([m["p50_ms"] for m in use if m.get("p50_ms") is not None]),
                "p99_ms": median([m["p99_ms"] for m in use if m.get("p99_ms") is not None]),
            }
        md, sg = row["mitmdump"]["rps_median"], row["sidegate"]["rps_median"]
        row["ratio"] = round(sg / md, 3) if md and sg else None
        per_round: list[float | None] = []
        paired: list[float] = []  # pairs where neither run was disturbed nor invalid
        for r in range(rounds):
            a, b = (final_run(measurements, proxy, mode, r) for proxy in PROXIES)
            ratio = round(b["rps"] / a["rps"], 3) if a and b and a["rps"] else None
            per_round.append(ratio)
            if ratio is not None and not (a["problems"] or b["problems"] or a.get("disturbed") or b.get("disturbed")):
                paired.append(ratio)
        row["ratio_per_round"] = per_round
        row["ratio_per_round_median"] = round(statistics.median(paired), 3) if paired else None
        row["bar_met"] = row["ratio"] is not None and row["ratio"] >= BAR
        summary[mode] = row
    return summary


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "python_ssl": ssl.OPENSSL_VERSION}
    for name, argv in (("mitmproxy", [str(VENV_BIN / "mitmdump"), "--version"]), ("openssl", ["openssl", "version"])):
        try:
            text = subprocess.run(argv, capture_output=True, timeout=30).stdout.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            continue
        out[name] = " | ".join(line.strip() for line in text.splitlines()[:3] if line.strip())
    try:
        out["git_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                           capture_output=True, timeout=10).stdout.decode().strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "addons"],
                               capture_output=True, timeout=10).stdout.decode().strip()  # fmt: skip
        out["addons_dirty"] = "yes" if dirty else "no"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def print_table(summary: dict[str, Any]) -> None:
    head = (
        f"{'mode':<11} {'mitmdump rps':>12} {'sidegate rps':>12} {'ratio':>6} {'paired':>6} {'bar':>4}  "
        f"{'CPU µs/req md/sg':>17}  per-round rps (mitmdump | sidegate)"
    )
    print(head)
    print("-" * len(head))
    for mode, row in summary.items():
        md, sg = row["mitmdump"], row["sidegate"]

        def rounds(x: dict[str, Any]) -> str:
            return ", ".join(
                f"{v}{'*' if i in x['disturbed_rounds'] else ''}{'!' if i in x['invalid_rounds'] else ''}"
                for i, v in enumerate(x["per_round"])
            )

        cpu = f"{md['proxy_cpu_us_per_req'] or '-'}/{sg['proxy_cpu_us_per_req'] or '-'}"
        print(
            f"{mode:<11} {md['rps_median'] or '-':>12} {sg['rps_median'] or '-':>12} {row['ratio'] or '-':>6} "
            f"{row['ratio_per_round_median'] or '-':>6} {'yes' if row['bar_met'] else 'NO':>4}  {cpu:>17}  "
            f"{rounds(md)} | {rounds(sg)}"
        )
    print("ratio: median sidegate / median mitmdump; paired: median of the per-round ratios (clean pairs)")
    print("(* disturbed by other load, left out of the median when a clean round exists; ! invalid)")


def bench(args: argparse.Namespace) -> int:
    if shutil.which("openssl") is None:
        raise SystemExit("mtls bench: the openssl command is missing (Debian: apt-get install -y openssl)")
    started = time.time()
    children = Children()
    taken: set[int] = set()
    work = Path(tempfile.mkdtemp(prefix="sidegate-mtls-bench-"))
    result: dict[str, Any] = {
        "started": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(args).items() if k not in ("client", "port", "seconds", "workers")},
        "bar": BAR,
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "versions": versions(),
    }
    measurements: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    failed = False
    old = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        backend_port = free_port(taken)
        backend = children.start([sys.executable, str(ROOT / "bench" / "backend.py"), "--port", str(backend_port)],
                                 work / "backend.out")  # fmt: skip
        wait_port(backend_port, backend)
        setup = Setup(work, backend_port, args.key_type)
        result["policy"] = setup.policy_text.replace(str(work), "$WORK")
        result["commands"] = {p: " ".join(setup.argv(p, "P", "BACKEND")).replace(str(work), "$WORK") for p in PROXIES}
        for rnd in range(args.rounds):
            # Both proxies run during the whole round (an idle one costs nothing); each mode measures them
            # back to back, so slow drifts of the shared machine hit both alike. The order alternates
            # per mode and per round; the modes run forwards in even rounds and backwards in odd ones.
            procs: dict[str, subprocess.Popen[bytes]] = {}
            ports: dict[str, int] = {}
            logs: dict[str, Path] = {}
            answer: dict[str, int] = {}
            try:
                for proxy in PROXIES:  # one after the other: they share mitmproxy's confdir
                    ports[proxy] = port = free_port(taken)
                    logs[proxy] = work / f"{proxy}-r{rnd}.out"
                    procs[proxy] = proc = children.start(setup.argv(proxy, port), logs[proxy])
                    wait_port(port, proc)
                    c = verify(setup, proxy, port, args.tls, full=rnd == 0)
                    if rnd == 0:  # s_time -reuse: does the proxy let OpenSSL's s_time resume? (a check)
                        c["s_time_reuse"] = run_s_time(children, port, "reuse", 1, setup.client_args(proxy, False),
                                                       args.tls, 1, work)  # fmt: skip
                    checks[f"{proxy}-r{rnd}"] = c
                    if c["problems"]:
                        raise RuntimeError(f"{proxy}: checks failed: {c['problems']}\n{tail(logs[proxy])}")
                    answer[proxy] = c["http10_answer"]["bytes"]
                    if args.warmup:
                        run_client("new", port, args.warmup, args.parallel, setup.client_args(proxy), args.tls)
                print(f"round {rnd + 1}/{args.rounds}: mitmdump on port {ports['mitmdump']}, "
                      f"sidegate on port {ports['sidegate']}", flush=True)  # fmt: skip
                ours = {os.getpid(), backend.pid, *(p.pid for p in procs.values())}
                for mode in MODES if rnd % 2 == 0 else MODES[::-1]:
                    order = PROXIES if (rnd + MODES.index(mode)) % 2 == 0 else PROXIES[::-1]
                    for position, proxy in enumerate(order):
                        proc = procs[proxy]
                        for attempt in range(args.retries + 1):
                            m = measure(children, setup, proxy, proc, ports[proxy], mode, backend, args,
                                        answer[proxy], ours)  # fmt: skip
                            m.update(round=rnd, position=position, attempt=attempt)
                            measurements.append(m)
                            flag = " disturbed" if m.get("disturbed") else ""
                            flag += f" PROBLEMS {m['problems']}" if m["problems"] else ""
                            print(f"  {mode:<11} {proxy:<9} {m['rps']:>8} req/s  proxy CPU {m.get('proxy_cpu_share')}"
                                  f" core, other {m.get('other_cpu_s')} s{flag}", flush=True)  # fmt: skip
                            if m["problems"] or not m.get("disturbed") or attempt == args.retries:
                                m["final"] = True
                                break
                        if not m.get("proxy_alive_after"):
                            raise RuntimeError(f"{proxy} exited during {mode}:\n{tail(logs[proxy])}")
            finally:
                for proxy, proc in procs.items():
                    children.stop(proc)
                    result.setdefault("proxy_logs_tail", {})[f"{proxy}-r{rnd}"] = tail(logs[proxy], 5)
        summary = summarise(measurements, args.rounds)
        result["summary"] = summary
        result["bar_met"] = all(row["bar_met"] for row in summary.values())
        failed = any(m["problems"] for m in measurements)
    except (Exception, KeyboardInterrupt) as e:  # Ctrl-C and SIGTERM too: recorded, children stopped below
        failed = True
        result["error"] = f"{type(e).__name__}: {e}"
        print(f"mtls bench: {result['error']}", file=sys.stderr)
    finally:
        children.stop_all()
        signal.signal(signal.SIGTERM, old)
        result["checks"] = checks
        result["measurements"] = measurements
        result["elapsed_s"] = round(time.time() - started, 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        text = json.dumps(result, indent=2, default=str).replace(str(work), "$WORK")
        (RESULTS / "mtls.json").write_text(text + "\n")
        if failed:
            print(f"mtls bench: work directory kept for inspection: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if "summary" in result:
        print()
        print_table(result["summary"])
        print(f"bar (sidegate >= {BAR:.0%} of mitmdump in every mode): {'met' if result['bar_met'] else 'NOT met'}")
    print(f"results: {RESULTS / 'mtls.json'} ({result['elapsed_s']} s)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the order alternates (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=8,
                        help="concurrent clients for new-connection modes (default: %(default)s)")  # fmt: skip
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds of load after each proxy start")
    parser.add_argument("--tls", choices=("1.2", "1.3"), help="force a TLS version (default: negotiated, 1.3)")
    parser.add_argument("--key-type", choices=("ec", "rsa"), default="ec", help="dev PKI keys (default: %(default)s)")
    parser.add_argument("--quiet-wait", type=float, default=20, help="max seconds to wait for an idle machine")
    parser.add_argument("--retries", type=int, default=2, help="re-measure a disturbed run up to N times")
    parser.add_argument("--quick", action="store_true", help="2 rounds x 3 s, 1 s warm-up")
    # the load client (internal)
    parser.add_argument("--client", choices=("new", "resume", "keepalive"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args)
    if args.quick:
        args.rounds, args.duration, args.warmup = 2, 3, 1.0
    if args.rounds < 2 or not 1 <= args.duration <= 300 or not 1 <= args.parallel <= 64 \
            or not 1 <= args.connections <= 512 or not 0 <= args.retries <= 5:  # fmt: skip
        parser.error("need --rounds >= 2, --duration 1..300, --parallel 1..64, --connections 1..512, --retries 0..5")
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
