"""sidegate benchmark: end-to-end throughput against plain mitmdump, and per-checkpoint cost in-process.

    .venv/bin/python bench/run.py [--duration 10] [--connections 32] [--rounds 3] [--quick]

One run does all of this, sequentially, on loopback only:

1. installs Debian's ``wrk`` if it is missing (``apt-get install -y wrk``; ``apt-get update``
   first only if that fails);
2. starts ``bench/backend.py`` (a tiny asyncio HTTP/1.1 keep-alive server) on a free port;
3. measures with ``wrk`` (keep-alive, same settings for every variant), each on fresh free ports:
     a. ``mitmdump``        plain ``mitmdump --mode reverse:... -q --set connection_strategy=lazy``
     b. ``sidegate-empty``  ``sidegate run`` with an empty policy directory (``$default`` forwards all)
     c. ``sidegate-routes20`` ``sidegate run`` with a 20-route ``kind: Api`` policy,
   each proxy freshly started per measurement, checked with one request, warmed up with a short
   ``wrk`` run, then measured; rounds alternate the order (a b c, c b a, ...). Before each
   measurement it waits (bounded) for the machine to be idle, and a measurement during which
   other processes used more than 10% of a core is repeated (``--retries``) and, if still
   disturbed, flagged and left out of the medians when a clean run of that variant exists;
4. runs an in-process microbenchmark of the four checkpoints (µs per request; the backend call
   is replaced by setting a prepared response);
5. writes ``bench/results/latest.json``, then prints a table and a Markdown snippet.

Every wait and loop is bounded; every child process is ended in ``finally`` (Ctrl-C included).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT  # the sidegate source tree under test (--source); the checkout by default
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
VENV_BIN = (
    Path(sys.executable).parent if (Path(sys.executable).parent / "mitmdump").exists() else ROOT / ".venv" / "bin"
)
LOOPBACK = "127.0.0.1"
TARGET_PATH = "/api/v1/items/42"  # matches "GET /api/v1/items/{id}" in the 20-route policy
TARGET_ROUTE = "GET /api/v1/items/{id}"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# 20 routes: exact paths, {param} routes, one {proxy+}, ANY routes and $default.
ROUTES_20 = """\
# sidegate benchmark policy: 20 routes (written by bench/run.py)
kind: Api
name: bench
stage: bench
timeout: 29s
routes:
  GET /health: {}
  GET /api/v1/status: {}
  GET /api/v1/items: {}
  POST /api/v1/items: {}
  OPTIONS /api/v1/items: {}
  GET /api/v1/items/{id}: {}
  PUT /api/v1/items/{id}: {}
  DELETE /api/v1/items/{id}: {}
  GET /api/v1/items/{id}/reviews: {}
  POST /api/v1/items/{id}/reviews: {}
  GET /api/v1/items/{id}/reviews/{reviewId}: {}
  GET /api/v1/users: {}
  GET /api/v1/users/{userId}: {}
  PATCH /api/v1/users/{userId}: {}
  GET /api/v1/users/{userId}/orders: {}
  GET /api/v1/orders/{orderId}: {}
  ANY /api/v1/carts/{cartId}: {}
  ANY /api/v2/search: {}
  GET /static/{proxy+}: {}
  $default: {}
"""
N_ROUTES = sum(1 for line in ROUTES_20.splitlines() if line.startswith("  ") and line.rstrip().endswith("{}"))
assert N_ROUTES == 20, N_ROUTES

VARIANTS = ("mitmdump", "sidegate-empty", "sidegate-routes20")
DESCRIPTIONS = {
    "mitmdump": "plain mitmdump --mode reverse:BACKEND -q --set connection_strategy=lazy (all built-in addons)",
    "sidegate-empty": "sidegate run, empty policy directory (default Api: $default forwards everything)",
    "sidegate-routes20": f"sidegate run, 20-route kind: Api policy; wrk hits {TARGET_PATH} ({TARGET_ROUTE})",
}


# -- child processes ---------------------------------------------------------------------------


class Children:
    """Every process we start, so that ``finally`` can end each one by its pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], *, log: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "wb") if log else subprocess.DEVNULL  # closed right after Popen
        env = dict(os.environ)
        if SOURCE != ROOT:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE), env.get("PYTHONPATH", "")) if p)
        try:
            # Own session: a Ctrl-C in the terminal reaches only us; we end the children in order.
            proc = subprocess.Popen(
                argv, cwd=SOURCE, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
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
                print(f"bench: could not stop pid {proc.pid}: {e}", file=sys.stderr)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {LOOPBACK}:{port} after {timeout:.0f}s")


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read(4096)
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process from /proc (None if unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_seconds() -> float | None:
    """CPU seconds spent busy by all cores since boot (/proc/stat), to spot other load during a run."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def wait_quiet(max_wait: float, threshold: float = 0.15, windows: int = 3) -> float:
    """Wait (at most ``max_wait`` s) until the machine has been idle for ``windows`` 1-s windows.

    Idle: less than ``threshold`` of one core busy. Returns the seconds waited; the caller records
    whether the measurement still ran under load (see ``disturbed``).
    """
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


def process_cpu_table() -> dict[int, tuple[str, float]]:
    """pid -> (command, utime + stime seconds) for every process we can read."""
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
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        table[int(entry.name)] = (cmd[:120] or f"[{comm}]", (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def foreign_cpu(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], ours: set[int]) -> list[Any]:
    """Processes other than ours that used CPU between two snapshots (largest first)."""
    used: list[tuple[float, int, str]] = []
    for pid, (cmd, cpu) in after.items():
        if pid in ours:
            continue
        delta = cpu - before.get(pid, (cmd, 0.0))[1]
        if delta >= 0.1:
            used.append((round(delta, 2), pid, cmd))
    return [[pid, cmd, delta] for delta, pid, cmd in sorted(used, reverse=True)[:5]]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# -- wrk -----------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit("bench: wrk is missing; install it (Debian: apt-get install -y wrk)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("bench: installing wrk (apt-get install -y wrk)", flush=True)
    r = subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, timeout=600)
    if r.returncode != 0:
        print("bench: apt-get install failed; running apt-get update first", flush=True)
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600, check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, timeout=600, check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: wrk still not found after apt-get install")
    return found


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text):
        out["requests"] = int(m.group(1))
        out["seconds"] = float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    if m := re.search(r"Latency\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text):
        out["avg_ms"] = _ms(m.group(1), m.group(2))
        out["max_ms"] = _ms(m.group(5), m.group(6))
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        out[f"p{pct}_ms"] = _ms(value, unit)
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        out["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx_3xx"] = int(m.group(1)) if m else 0
    return out


def run_wrk(
    children: Children, wrk: str, port: int, seconds: float, args: argparse.Namespace
) -> tuple[dict[str, Any], str]:
    argv = [
        wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "5s", "--latency", f"http://{LOOPBACK}:{port}{TARGET_PATH}",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    children.procs.append(proc)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk did not finish within {seconds + 30:.0f}s") from None
    finally:
        children.stop(proc)  # ends it if still running (timeout, Ctrl-C)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{text}")
    result = parse_wrk(text)
    if "rps" not in result:
        raise RuntimeError(f"could not parse wrk output:\n{text}")
    result["wrk_cpu_s"] = round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 3)
    return result, text


# -- variants ------------------------------------------------------------------------------------


@dataclass
class Measurement:
    variant: str
    round: int
    position: int  # order within the round
    rps: float
    requests: int
    seconds: float
    avg_ms: float | None
    p50_ms: float | None
    p75_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    proxy_cpu_s: float | None
    proxy_cpu_us_per_req: float | None
    backend_cpu_us_per_req: float | None
    wrk_cpu_s: float | None
    proxy_rss_mb_end: float | None
    warmup_rps: float | None
    checks: dict[str, Any] = field(default_factory=dict)


def proxy_argv(variant: str, backend_port: int, port: int, admin_port: int, work: Path) -> list[str]:
    reverse = f"reverse:http://{LOOPBACK}:{backend_port}"
    if variant == "mitmdump":
        return [
            str(VENV_BIN / "mitmdump"), "--mode", reverse, "--listen-host", LOOPBACK, "--listen-port", str(port),
            "-q", "--set", "connection_strategy=lazy",
        ]  # fmt: skip
    policies = work / ("policies-empty" if variant == "sidegate-empty" else "policies-routes20")
    if SOURCE == ROOT:
        sidegate = [str(VENV_BIN / "sidegate")]  # the installed command (editable install of this checkout)
    else:  # another tree: its addons package first on the path (see Children.start)
        sidegate = [sys.executable, "-m", "addons.cli"]
    return [
        *sidegate, "run", "--config", str(SOURCE / "mitm_config.yaml"),
        "--set", f"mode={reverse}",
        "--set", f"listen_host={LOOPBACK}",
        "--set", f"listen_port={port}",
        "--set", f"sidegate_policies={policies}",
        "--set", f"sidegate_access_log={work / f'access-{variant}.log'}",
        "--set", f"sidegate_admin={LOOPBACK}:{admin_port}",
        "--set", "sidegate_reload_interval=0",
    ]  # fmt: skip


def access_log_check(path: Path) -> dict[str, Any]:
    """Count the access log lines and summarise the last one (route, status, checkpoint µs)."""
    try:
        data = path.read_bytes()
    except OSError:
        return {"access_log": "missing"}
    lines = data.count(b"\n")
    last: dict[str, Any] = {}
    for raw in reversed(data.splitlines()[-5:]):
        try:
            last = json.loads(raw)
            break
        except ValueError:
            continue
    return {
        "access_log_lines": lines,
        "last_route": last.get("route"),
        "last_status": last.get("status"),
        "last_outcome": last.get("outcome"),
        "last_checkpoint_us": last.get("checkpoint_us"),
        "last_integration_us": last.get("integration_us"),
    }


def measure(
    children: Children, wrk: str, variant: str, backend: subprocess.Popen[bytes], backend_port: int,
    work: Path, args: argparse.Namespace, rnd: int, position: int,
) -> Measurement:  # fmt: skip
    port, admin_port = free_port(), free_port()
    while admin_port == port:
        admin_port = free_port()
    log = work / f"{variant}-r{rnd}.out"
    access = work / f"access-{variant}.log"
    access.unlink(missing_ok=True)
    waited = wait_quiet(args.quiet_wait)
    proc = children.start(proxy_argv(variant, backend_port, port, admin_port, work), log=log)
    try:
        wait_port(port, proc)
        checks: dict[str, Any] = {"waited_for_quiet_s": waited}
        status, headers, body = http_get(port, TARGET_PATH)
        checks["probe_status"] = status
        checks["probe_body"] = body[:200].decode(errors="replace")
        if variant != "mitmdump":
            checks["probe_request_id"] = headers.get("x-amzn-requestid")
            try:
                checks["readyz"] = http_get(admin_port, "/readyz")[0]
            except OSError as e:
                checks["readyz"] = f"error: {e}"
        if status != 200:
            raise RuntimeError(f"{variant}: probe GET {TARGET_PATH} answered {status}: {body[:300]!r}")
        warm, _ = run_wrk(children, wrk, port, args.warmup, args)
        procs0 = process_cpu_table()
        cpu0, bcpu0, sys0 = cpu_seconds(proc.pid), cpu_seconds(backend.pid), system_busy_seconds()
        result, _ = run_wrk(children, wrk, port, args.duration, args)
        cpu1, bcpu1, sys1 = cpu_seconds(proc.pid), cpu_seconds(backend.pid), system_busy_seconds()
        checks["foreign_processes"] = foreign_cpu(procs0, process_cpu_table(), {proc.pid, backend.pid, os.getpid()})
        if proc.poll() is not None:
            raise RuntimeError(f"{variant} exited with {proc.returncode} during the run:\n{tail(log)}")
        checks["rss_mb"] = rss_mb(proc.pid)
        try:  # the proxy still answers after the load
            checks["after_status"] = http_get(port, TARGET_PATH)[0]
        except OSError as e:
            checks["after_status"] = f"error: {e}"
        if variant != "mitmdump":
            checks.update(access_log_check(access))
    finally:
        children.stop(proc)
    if variant != "mitmdump":
        access.unlink(missing_ok=True)  # it grows by ~0.5 KB per request
    n = result.get("requests") or 0
    proxy_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    backend_cpu = None if bcpu0 is None or bcpu1 is None else bcpu1 - bcpu0
    if None not in (sys0, sys1, proxy_cpu, backend_cpu):
        # Busy CPU of the whole machine not spent by the proxy, the backend or wrk (kernel work
        # for loopback traffic partly lands here too): large values mean something else ran.
        busy = sys1 - sys0  # type: ignore[operator]
        checks["system_busy_s"] = round(busy, 2)
        checks["other_cpu_s"] = round(busy - proxy_cpu - backend_cpu - result.get("wrk_cpu_s", 0), 2)  # type: ignore[operator]
        # On an otherwise idle machine this stays near 0 (loopback kernel work is charged to the
        # processes); more than 10% of one core for the run's duration counts as disturbed.
        checks["disturbed"] = checks["other_cpu_s"] > 0.1 * result.get("seconds", args.duration)
    return Measurement(
        variant=variant,
        round=rnd,
        position=position,
        rps=result["rps"],
        requests=n,
        seconds=result.get("seconds", 0.0),
        avg_ms=result.get("avg_ms"),
        p50_ms=result.get("p50_ms"),
        p75_ms=result.get("p75_ms"),
        p90_ms=result.get("p90_ms"),
        p99_ms=result.get("p99_ms"),
        max_ms=result.get("max_ms"),
        non_2xx_3xx=result.get("non_2xx_3xx", 0),
        socket_errors=result.get("socket_errors", {}),
        proxy_cpu_s=None if proxy_cpu is None else round(proxy_cpu, 2),
        proxy_cpu_us_per_req=None if proxy_cpu is None or not n else round(proxy_cpu * 1e6 / n, 1),
        backend_cpu_us_per_req=None if backend_cpu is None or not n else round(backend_cpu * 1e6 / n, 1),
        wrk_cpu_s=result.get("wrk_cpu_s"),
        proxy_rss_mb_end=checks.get("rss_mb"),
        warmup_rps=warm.get("rps"),
        checks=checks,
    )


def summarise(measurements: list[Measurement]) -> dict[str, dict[str, Any]]:
    """Median of each figure over the rounds, per variant (and best rps for reference)."""
    out: dict[str, dict[str, Any]] = {}
    base: float | None = None
    for variant in VARIANTS:
        every = [m for m in measurements if m.variant == variant]
        if not every:
            continue
        clean = [m for m in every if not m.checks.get("disturbed")]
        ms = clean or every  # runs disturbed by other load count only if no clean run exists

        def med(attr: str, ms: list[Measurement] = ms) -> float | None:
            vals = [getattr(m, attr) for m in ms if getattr(m, attr) is not None]
            return round(statistics.median(vals), 3) if vals else None

        row: dict[str, Any] = {
            "runs": len(ms),
            "runs_total": len(every),
            "disturbed_runs": len(every) - len(clean),
            "rps_median": med("rps"),
            "rps_best": max(m.rps for m in ms),
            "rps_all": [m.rps for m in every],
            "rps_all_disturbed": [bool(m.checks.get("disturbed")) for m in every],
            "p50_ms_median": med("p50_ms"),
            "p99_ms_median": med("p99_ms"),
            "proxy_cpu_us_per_req_median": med("proxy_cpu_us_per_req"),
            "backend_cpu_us_per_req_median": med("backend_cpu_us_per_req"),
            "non_2xx_3xx_total": sum(m.non_2xx_3xx for m in ms),
            "socket_errors_total": sum(sum(m.socket_errors.values()) for m in ms),
            "other_cpu_s_max": max((m.checks.get("other_cpu_s", 0) for m in ms), default=None),
        }
        if variant == "mitmdump":
            base = row["rps_median"]
        out[variant] = row
    for row in out.values():
        row["ratio_to_mitmdump"] = round(row["rps_median"] / base, 3) if base else None
    # Ratios within each round (same conditions, adjacent in time).
    rounds = sorted({m.round for m in measurements})
    for variant, row in out.items():
        per_round = []
        for r in rounds:
            b = next((m.rps for m in measurements if m.round == r and m.variant == "mitmdump"), None)
            v = next((m.rps for m in measurements if m.round == r and m.variant == variant), None)
            if b and v:
                per_round.append(round(v / b, 3))
        row["ratio_per_round"] = per_round
    return out


# -- in-process microbenchmark -------------------------------------------------------------------


def microbench(
    policy_dir: Path, iterations: int, warmup: int, path: str, expect_route: str
) -> Coroutine[Any, Any, dict[str, Any]]:
    """Per-request cost of the checkpoint hooks, driven directly (no proxy, no network)."""
    import gc

    from mitmproxy.test import taddons, tflow, tutils

    from addons.gateway import Sidegate
    from addons.lifecycle import IntegrationRequest, IntegrationResponse, MethodRequest, MethodResponse
    from addons.policy.policyset import load_policy_set

    hooks = ("method_request", "integration_request", "integration_response", "method_response")

    async def go() -> dict[str, Any]:
        gate = Sidegate()
        with taddons.context(gate) as tctx:
            tctx.configure(
                gate,
                mode=[f"reverse:http://{LOOPBACK}:9"],
                sidegate_policies=str(policy_dir),
                sidegate_admin="",
                sidegate_reload_interval="0",
                sidegate_access_log="/dev/null",
            )
            policy = load_policy_set(policy_dir)
            gate.install(policy)
            gate.access_log.open("/dev/null")
            mreq = cast(MethodRequest, gate.addons[0])
            ireq = cast(IntegrationRequest, gate.addons[1])
            iresp = cast(IntegrationResponse, gate.addons[2])
            mresp = cast(MethodResponse, gate.addons[3])

            answer: list[Any] = [None]

            async def stub_backend(ex: Any) -> None:
                # Instead of the backend call (aiohttp), the backend's answer (made before the
                # clock starts) is set directly.
                ex.flow.response = answer[0]

            gate.integrations.call = stub_backend  # type: ignore[method-assign]  # this instance only

            wall = {h: 0 for h in hooks}
            recorded = {h: 0 for h in hooks}
            total_ns = 0
            clock = time.perf_counter_ns
            first_meta: dict[str, Any] | None = None
            gc.collect()
            for i in range(warmup + iterations):
                f = tflow.tflow(req=tutils.treq(path=path.encode(), content=b"", headers=_headers()))
                answer[0] = tutils.tresp()
                t0 = clock()
                await mreq.requestheaders(f)
                await mreq.request(f)
                t1 = clock()
                await ireq.request(f)  # checkpoint plugins, then the stubbed backend call
                t2 = clock()
                await iresp.response(f)
                t3 = clock()
                await mresp.response(f)
                t4 = clock()
                meta = f.metadata["sidegate"]
                if i == 0:
                    first_meta = json.loads(json.dumps(meta))
                    if meta.get("route") != expect_route or meta.get("status") != 200:
                        raise RuntimeError(
                            f"microbench: unexpected outcome {meta.get('route')!r} {meta.get('status')!r}"
                        )
                if i < warmup:
                    continue
                wall["method_request"] += t1 - t0
                wall["integration_request"] += t2 - t1
                wall["integration_response"] += t3 - t2
                wall["method_response"] += t4 - t3
                total_ns += t4 - t0
                for h in hooks:
                    recorded[h] += meta["checkpoint_us"].get(h, 0)
            return {
                "policy": policy.summary(),
                "path": path,
                "route": expect_route,
                "iterations": iterations,
                "warmup": warmup,
                "wall_us": {h: round(wall[h] / iterations / 1000, 2) for h in hooks},
                "wall_total_us": round(total_ns / iterations / 1000, 2),
                "checkpoint_us_mean": {h: round(recorded[h] / iterations, 2) for h in hooks},
                "checkpoint_us_total": round(sum(recorded.values()) / iterations, 2),
                "first_flow_metadata": first_meta,
            }

    return go()


def _headers() -> Any:
    from mitmproxy import http

    return http.Headers(
        [
            (b"host", b"127.0.0.1:8080"),
            (b"user-agent", b"bench/1"),
            (b"accept", b"*/*"),
        ]
    )


# -- report --------------------------------------------------------------------------------------


def per_round(row: dict[str, Any]) -> str:
    """Requests/s of every run in round order; * marks a run disturbed by other load."""
    return ", ".join(
        f"{x:.0f}{'*' if d else ''}" for x, d in zip(row["rps_all"], row["rps_all_disturbed"], strict=True)
    )


def fmt(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"Measured {result['timestamp']} on {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}); "
        f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s --latency, keep-alive, "
        f"{s['rounds']} round(s) per variant in alternating order; figures are medians over the runs "
        "not disturbed by other load on the machine (* in the last column marks a disturbed run). "
        "wrk, the proxy and the backend share the same cores.",
        "",
        "| variant | requests/s (median) | p50 ms | p99 ms | proxy CPU µs/req | ratio to mitmdump | per-round rps |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for variant, row in result["summary"].items():
        lines.append(
            f"| {variant} | {row['rps_median']:.0f} | {fmt(row['p50_ms_median'])} | {fmt(row['p99_ms_median'])} | "
            f"{fmt(row['proxy_cpu_us_per_req_median'], 0)} | {fmt(row['ratio_to_mitmdump'])} | "
            f"{per_round(row)} |"
        )
    disturbed = {v: r["disturbed_runs"] for v, r in result["summary"].items() if r.get("disturbed_runs")}
    lines += [
        "",
        f"Measured: {result['label'] or result['versions'].get('source')}. "
        + (
            f"Runs still disturbed by other load on the machine after retries: {disturbed}; "
            f"{len(result['discarded_disturbed'])} disturbed run(s) were measured again."
            if disturbed
            else f"No kept run was disturbed by other load ({len(result['discarded_disturbed'])} disturbed run(s) "
            "were measured again)."
        ),
    ]
    for mb in result.get("microbench", []):
        lines += [
            "",
            f"In-process, {mb['iterations']} requests ({mb['policy']}; {mb['path']} → {mb['route']}), "
            "mean µs per request:",
            "",
            "| checkpoint | wall µs (hook call) | recorded checkpoint_us |",
            "| --- | ---: | ---: |",
        ]
        for h, v in mb["wall_us"].items():
            lines.append(f"| {h} | {v:.1f} | {mb['checkpoint_us_mean'][h]:.1f} |")
        lines.append(f"| total | {mb['wall_total_us']:.1f} | {mb['checkpoint_us_total']:.1f} |")
    bar = result.get("bar")
    if bar:
        lines += ["", bar["text"]]
    return "\n".join(lines)


def print_table(summary: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'variant':<20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11} {'ratio':>7}  per round")
    for variant, row in summary.items():
        print(
            f"{variant:<20} {row['rps_median']:>9.0f} {fmt(row['p50_ms_median']):>8} {fmt(row['p99_ms_median']):>8} "
            f"{fmt(row['proxy_cpu_us_per_req_median'], 0):>11} {fmt(row['ratio_to_mitmdump']):>7}  "
            f"{per_round(row)}"
        )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "source": str(SOURCE)}
    try:
        import mitmproxy.version

        out["mitmproxy"] = mitmproxy.version.VERSION
    except Exception:
        pass
    try:
        out["sidegate_commit"] = subprocess.run(
            ["git", "-C", str(SOURCE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(SOURCE), "status", "--porcelain", "--", "addons"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        out["addons_dirty"] = "yes" if dirty else "no"
    except Exception:
        pass
    return out


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, choices=(1, 2), help="wrk threads (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per variant, alternating order (default 3)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of wrk warm-up per proxy (default 2)")
    parser.add_argument("--iterations", type=int, default=5000, help="microbenchmark requests (default 5000)")
    parser.add_argument("--quick", action="store_true", help="3 s runs, 2 rounds, 1 s warm-up, 2000 iterations")
    parser.add_argument("--skip-micro", action="store_true", help="only the end-to-end part")
    parser.add_argument(
        "--retries", type=int, default=2, help="re-measure a run disturbed by other load up to N times (default 2)"
    )
    parser.add_argument("--retry-pause", type=float, default=5, help="seconds to wait before such a retry")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="before each measurement wait up to this many seconds for the machine to be idle (default 60)",
    )
    parser.add_argument("--label", default="", help="free text naming what was measured (kept in the JSON)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="sidegate source tree to measure (default: this checkout), e.g. a `git archive` export of a commit",
    )
    args = parser.parse_args(argv)
    global SOURCE
    SOURCE = args.source.resolve()
    if not (SOURCE / "addons" / "gateway.py").is_file() or not (SOURCE / "mitm_config.yaml").is_file():
        parser.error(f"--source {SOURCE}: no addons/gateway.py and mitm_config.yaml there")
    args.output = args.output.resolve()
    if args.quick:
        args.duration, args.rounds, args.warmup, args.iterations = min(args.duration, 3), 2, 1, 2000
    args.rounds = max(1, min(args.rounds, 10))
    args.duration = max(1.0, min(args.duration, 300.0))
    args.iterations = max(100, min(args.iterations, 200_000))
    args.retries = max(0, min(args.retries, 5))
    args.retry_pause = max(0.0, min(args.retry_pause, 60.0))
    args.quiet_wait = max(0.0, min(args.quiet_wait, 600.0))

    os.chdir(SOURCE)
    sys.path.insert(0, str(SOURCE))  # ahead of the editable install's finder
    # Ctrl-C must reach us even when started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _raise_keyboard_interrupt)

    wrk = ensure_wrk()
    children = Children()
    work = Path(tempfile.mkdtemp(prefix="sidegate-bench-"))
    measurements: list[Measurement] = []
    failures: list[dict[str, Any]] = []
    micro: list[dict[str, Any]] = []
    discarded: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        (work / "policies-empty").mkdir()
        (work / "policies-routes20").mkdir()
        (work / "policies-routes20" / "api.yaml").write_text(ROUTES_20)

        backend_port = free_port()
        backend = children.start(
            [sys.executable, str(BENCH / "backend.py"), "--port", str(backend_port)], log=work / "backend.out"
        )
        wait_port(backend_port, backend)
        print(f"bench: backend on {LOOPBACK}:{backend_port}; work dir {work}", flush=True)

        for rnd in range(1, args.rounds + 1):
            order = VARIANTS if rnd % 2 else tuple(reversed(VARIANTS))
            for position, variant in enumerate(order, 1):
                print(f"bench: round {rnd}/{args.rounds} {variant} ...", end=" ", flush=True)
                try:
                    m = measure(children, wrk, variant, backend, backend_port, work, args, rnd, position)
                    for _ in range(args.retries):  # bounded: other load on the machine skews the figures
                        if not m.checks.get("disturbed"):
                            break
                        print(
                            f"disturbed ({m.checks.get('other_cpu_s')} CPU s elsewhere: "
                            f"{m.checks.get('foreign_processes')}); measuring again ...",
                            end=" ",
                            flush=True,
                        )
                        discarded.append(asdict(m))
                        time.sleep(args.retry_pause)
                        m = measure(children, wrk, variant, backend, backend_port, work, args, rnd, position)
                except (RuntimeError, OSError, http.client.HTTPException) as e:
                    log = work / f"{variant}-r{rnd}.out"
                    failures.append({"variant": variant, "round": rnd, "error": str(e), "output_tail": tail(log, 40)})
                    print(f"FAILED: {e}\n{tail(log, 40)}", flush=True)
                    continue
                measurements.append(m)
                errs = sum(m.socket_errors.values())
                print(
                    f"{m.rps:.0f} req/s, p50 {fmt(m.p50_ms)} ms, p99 {fmt(m.p99_ms)} ms, "
                    f"proxy CPU {fmt(m.proxy_cpu_us_per_req, 0)} µs/req, "
                    f"machine busy {m.checks.get('system_busy_s', 'n/a')} s of {(os.cpu_count() or 1) * m.seconds:.0f}"
                    + (f", non-2xx {m.non_2xx_3xx}" if m.non_2xx_3xx else "")
                    + (f", socket errors {m.socket_errors}" if errs else "")
                    + (" [DISTURBED by other load]" if m.checks.get("disturbed") else ""),
                    flush=True,
                )
                if backend.poll() is not None:
                    raise RuntimeError(f"the backend exited with {backend.returncode}:\n{tail(work / 'backend.out')}")
        children.stop(backend)

        if not args.skip_micro:
            print(f"bench: in-process microbenchmark, {args.iterations} requests per policy ...", flush=True)

            async def all_micro() -> None:
                for policy_dir, route in (("policies-routes20", TARGET_ROUTE), ("policies-empty", "$default")):
                    warm = min(500, args.iterations // 10)
                    try:
                        micro.append(await microbench(work / policy_dir, args.iterations, warm, TARGET_PATH, route))
                    except Exception as e:  # keep the end-to-end figures
                        failures.append({"variant": f"microbench {policy_dir}", "round": 0, "error": repr(e)})
                        print(f"bench: microbenchmark with {policy_dir} failed: {e!r}", file=sys.stderr)

            asyncio.run(all_micro())
    finally:
        children.stop_all()
        if failures:
            print(f"bench: kept the work directory with the proxies' output: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    summary = summarise(measurements)
    result: dict[str, Any] = {
        "timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "kernel": platform.release()},
        "versions": versions(),
        "label": args.label,
        "settings": {
            "duration": args.duration,
            "warmup": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "rounds": args.rounds,
            "iterations": args.iterations,
            "target_path": TARGET_PATH,
            "statistic": "median over the rounds not disturbed by other load (all of them if none is clean)",
            "wrk": subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.splitlines()[0:1],
        },
        "variants": DESCRIPTIONS,
        "routes20_policy": ROUTES_20,
        "summary": summary,
        "measurements": [asdict(m) for m in measurements],
        "failures": failures,
        "discarded_disturbed": discarded,
        "microbench": micro,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    if "mitmdump" in summary and "sidegate-routes20" in summary:
        ratio = summary["sidegate-routes20"]["ratio_to_mitmdump"]
        met = ratio is not None and ratio >= 1.0
        errs = summary["sidegate-routes20"]["non_2xx_3xx_total"] + summary["sidegate-routes20"]["socket_errors_total"]
        result["bar"] = {
            "ratio": ratio,
            "met": met and not errs,
            "text": f"Bar (sidegate run with the 20-route policy ≥ plain mitmdump requests/s, same run): "
            f"ratio {ratio:.2f} (median) → {'met' if met and not errs else 'NOT met'}"
            + (f"; {errs} non-2xx/socket errors" if errs else ""),
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")  # before printing: a closed stdout loses nothing
    print_table(summary)
    for mb in micro:
        print(f"\nmicrobench ({mb['policy']}; {mb['path']} → {mb['route']}), mean µs/request:")
        for h in mb["wall_us"]:
            print(f"  {h:<22} wall {mb['wall_us'][h]:7.1f}   recorded {mb['checkpoint_us_mean'][h]:7.1f}")
        print(f"  {'total':<22} wall {mb['wall_total_us']:7.1f}   recorded {mb['checkpoint_us_total']:7.1f}")
    if failures:
        print(f"\nbench: {len(failures)} measurement(s) failed; see {args.output}", file=sys.stderr)
    print(f"\nbench: results written to {args.output}\n")
    print(markdown(result))
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nbench: interrupted; child processes stopped", file=sys.stderr)
        sys.exit(130)
