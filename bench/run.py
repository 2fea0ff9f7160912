"""sidegate benchmark: end-to-end throughput against plain mitmdump, and per-checkpoint cost in-process.

    .venv/bin/python bench/run.py [--duration 10] [--connections 32] [--rounds 3] [--quick]
                                  [--variants a,b,...] [--skip-e2e] [--skip-micro] [--skip-memory]
                                  [--paired-slices 10] [--paired-slice 2] [--paired-rounds 4]

One run does all of this, sequentially, on loopback only:

1. installs Debian's ``wrk`` and ``redis-server`` if they are missing (``apt-get install -y``;
   ``apt-get update`` first only if that fails), starts ``redis-server`` on a free loopback port
   (``--save "" --appendonly no``) for the Redis throttle variants and microbenchmarks;
2. starts ``bench/backend.py`` (a tiny asyncio HTTP/1.1 keep-alive server) on a free port;
3. measures with ``wrk`` (keep-alive, same settings for every variant), each on fresh free ports:
     a. ``mitmdump``                  plain ``mitmdump --mode reverse:... -q --set connection_strategy=lazy``
     b. ``sidegate-empty``            ``sidegate run`` with an empty policy directory (``$default`` forwards all)
     c. ``sidegate-routes20``         ``sidegate run`` with a 20-route ``kind: Api`` policy
     d. ``sidegate-cors-origin``      c + ``kind: Cors`` + ``kind: OriginVerify``; wrk sends Origin and the secret
     e. ``sidegate-throttle-memory``  c + ``kind: Throttle`` (account, stage, route tiers; never refuses)
     f. ``sidegate-throttle-redis``   e with ``store: redis://127.0.0.1:PORT/0``
     g. ``sidegate-throttle-redis-t1s`` f with ``store_timeout: 1s`` (every request decided in Redis)
   each proxy freshly started per measurement, checked with one request, warmed up with a short
   ``wrk`` run, then measured; rounds alternate the order (a b c ..., ... c b a). Before each
   measurement it waits (bounded) for the machine to be idle, and a measurement during which
   other processes used more than 10% of a core is repeated (``--retries``) and, if still
   disturbed, flagged and left out of the medians when a clean run of that variant exists.
   Each sidegate run's access log is read in full: every request must be a 200 from the expected
   route without flags (a Redis store error is a ``store_unavailable`` flag);
   then measures every bar again side by side (``--paired-*``): the variant's and its baseline's
   proxies run at once, and short ``wrk`` slices alternate between them (baseline, variant;
   variant, baseline; ...), so that the machine's slow drift falls on both, over several fresh
   pairs of processes; the bars are decided on these figures. ``sidegate-empty`` is also measured
   against a second instance of itself, which shows how far the method strays from 1.0;
4. runs in-process microbenchmarks: the four checkpoints per policy (µs per request; the backend
   call is replaced by setting a prepared response), and the throttle decision alone
   (``MemoryStore.acquire`` / ``await RedisStore.acquire`` with three buckets);
5. measures memory with 1,000,000 distinct clients in child processes (``MemoryStore`` with its
   default bound, and a ``Throttle`` keyed per client ip), sampling VmRSS;
6. writes ``bench/results/latest.json``, then prints a table and a Markdown snippet.

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
import random
import re
import resource
import secrets
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

ORIGIN_SECRET_ENV = "SIDEGATE_BENCH_ORIGIN_SECRET"
ORIGIN_SECRET_PREVIOUS_ENV = "SIDEGATE_BENCH_ORIGIN_SECRET_PREVIOUS"
# Fresh per run of this script; handed to the sidegate processes in their environment and sent by wrk.
ORIGIN_SECRET = "bench-" + secrets.token_hex(16)
ORIGIN_SECRET_PREVIOUS = "bench-previous-" + secrets.token_hex(16)
# Allowed through the wildcard rule (the exact origins are checked first, then the wildcards).
BENCH_ORIGIN = "https://pr-1234.preview.example.com"

CORS_POLICY = """\
# sidegate benchmark: CORS (written by bench/run.py)
kind: Cors
allow_origins:
  - http://localhost:3000
  - https://app.example.com
  - https://admin.example.com:8443
  - https://*.preview.example.com
  - https://*.example.org
allow_methods: [GET, POST, PUT, DELETE]
allow_headers: [content-type, x-api-key]
expose_headers: [x-amzn-requestid]
allow_credentials: true
max_age: 10m
"""

ORIGIN_POLICY = f"""\
# sidegate benchmark: origin secret header (written by bench/run.py)
kind: OriginVerify
header: x-origin-verify
secrets:
  - {{secret_env: {ORIGIN_SECRET_ENV}}}
  - {{secret_env: {ORIGIN_SECRET_PREVIOUS_ENV}}}
exempt_routes: [GET /health]
allow_preflight: true
"""

# Three tiers, limits far above anything wrk reaches: every request takes a token from each bucket
# (the full decision path) and none is ever refused. The route tier barely refills, so the tokens it
# has left count the decisions made (checked against the access log for the Redis variants).
THROTTLE_LIMIT = "{rate: 1000000, burst: 1000000}"
COUNTING_BURST = 10_000_000  # the largest burst a policy accepts
THROTTLE_COUNTING_LIMIT = f"{{rate: 0.001, burst: {COUNTING_BURST}}}"


def throttle_policy(store: str = "memory", extra: str = "") -> str:
    return f"""\
# sidegate benchmark: three throttle tiers that never refuse (written by bench/run.py)
kind: Throttle
store: {store}
{extra}account: {THROTTLE_LIMIT}
stage: {THROTTLE_LIMIT}
routes:
  {TARGET_ROUTE}: {THROTTLE_COUNTING_LIMIT}
"""


MANAGED_GROUPS = ("core", "sqli", "xss", "lfi", "rce", "ssrf", "known_bad_inputs", "nosql_and_prototype", "xxe")
WAF_POLICY = (
    "# sidegate benchmark: WAF with every managed group (written by bench/run.py)\nkind: WebAcl\nrules:\n"
    + "".join(
        f"  - {{id: managed-{g}, priority: {100 * (i + 1)}, managed_group: {g}}}\n"
        for i, g in enumerate(MANAGED_GROUPS)
    )
)
# Each request with a user agent and a query argument of its own (the other headers repeat, as a
# client's do): the WAF cannot answer from what it remembers of values seen before.
VARY_SCRIPT = """\
local n = 0
request = function()
  n = n + 1
  wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 r" .. n
  return wrk.format(nil, wrk.path .. "?page=" .. n)
end
"""
# A browser-like API call: the managed groups inspect every header, the cookies, path and query.
WAF_HEADERS = (
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"),
    ("Accept", "application/json"),
    ("Accept-Language", "en-GB,en;q=0.9"),
    (
        "Authorization",
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFuYSJ9.c2lnbmF0dXJl",
    ),
    ("Cookie", "theme=dark; session=9f8e7d6c5b4a"),
)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    policies: dict[str, str] = field(default_factory=dict)  # file name -> text; sidegate only
    headers: tuple[tuple[str, str], ...] = ()  # sent by wrk and the probes on every request
    wrk_script: str = ""  # a wrk Lua script (wrk -s) shaping each request, if any
    env: tuple[tuple[str, str], ...] = ()  # extra environment of the proxy process
    expect_route: str = TARGET_ROUTE
    expect_headers: tuple[str, ...] = ()  # response headers the probe must see
    redis: bool = False  # the policy names the script's redis-server (REDIS_URL placeholder)
    bar: tuple[str, float] | None = None  # (baseline variant, minimum ratio of requests/s)
    compare: str = ""  # a baseline whose ratio is reported without a bar

    @property
    def sidegate(self) -> bool:
        return self.name != "mitmdump"


REDIS_URL = "@REDIS_URL@"  # replaced by redis://127.0.0.1:PORT/0 when the policy is written
ORIGIN_HEADERS = (("Origin", BENCH_ORIGIN), ("x-origin-verify", ORIGIN_SECRET))
ORIGIN_ENV = ((ORIGIN_SECRET_ENV, ORIGIN_SECRET), (ORIGIN_SECRET_PREVIOUS_ENV, ORIGIN_SECRET_PREVIOUS))

VARIANT_LIST = (
    Variant(
        "mitmdump",
        "plain mitmdump --mode reverse:BACKEND -q --set connection_strategy=lazy (all built-in addons)",
    ),
    Variant(
        "sidegate-empty",
        "sidegate run, empty policy directory (default Api: $default forwards everything)",
        expect_route="$default",
    ),
    Variant(
        "sidegate-empty-origin-headers",
        "sidegate-empty, with wrk sending the cors-origin variant's Origin and x-origin-verify headers: the "
        "same requests, so that the cors-origin bar measures enabling the policies, not bigger requests",
        expect_route="$default",
        headers=ORIGIN_HEADERS,
    ),
    Variant(
        "sidegate-empty-browser-headers",
        "sidegate-empty, with wrk sending the waf-managed variant's browser-like headers (same requests)",
        expect_route="$default",
        headers=WAF_HEADERS,
    ),
    Variant(
        "sidegate-routes20",
        f"sidegate run, 20-route kind: Api policy; wrk hits {TARGET_PATH} ({TARGET_ROUTE})",
        {"api.yaml": ROUTES_20},
        bar=("mitmdump", 1.0),
    ),
    Variant(
        "sidegate-cors-origin",
        "20 routes + kind: Cors (exact and wildcard origins, credentials, max_age) + kind: OriginVerify "
        f"(two secrets from the environment); wrk sends Origin: {BENCH_ORIGIN} and x-origin-verify",
        {"api.yaml": ROUTES_20, "cors.yaml": CORS_POLICY, "origin.yaml": ORIGIN_POLICY},
        headers=ORIGIN_HEADERS,
        env=ORIGIN_ENV,
        expect_headers=("access-control-allow-origin", "access-control-allow-credentials", "vary"),
        bar=("sidegate-empty-origin-headers", 0.95),
    ),
    Variant(
        "sidegate-waf-managed",
        "20 routes + kind: WebAcl with all nine managed rule groups (core, sqli, xss, lfi, rce, ssrf, "
        "known_bad_inputs, nosql_and_prototype, xxe); wrk sends browser-like headers (user agent, accept, "
        "a bearer JWT, cookies) on every request",
        {"api.yaml": ROUTES_20, "waf.yaml": WAF_POLICY},
        headers=WAF_HEADERS,
        bar=("sidegate-empty-browser-headers", 0.70),
    ),
    Variant(
        "sidegate-empty-browser-varied",
        "sidegate-empty-browser-headers, each request with its own user agent and query argument (wrk -s)",
        expect_route="$default",
        headers=WAF_HEADERS,
        wrk_script=VARY_SCRIPT,
    ),
    Variant(
        "sidegate-waf-managed-varied",
        "sidegate-waf-managed, each request with its own user agent and query argument (wrk -s): what the WAF "
        "costs when values are new (reported beside the bar, which wrk's identical requests measure)",
        {"api.yaml": ROUTES_20, "waf.yaml": WAF_POLICY},
        headers=WAF_HEADERS,
        wrk_script=VARY_SCRIPT,
        compare="sidegate-empty-browser-varied",
    ),
    Variant(
        "sidegate-throttle-memory",
        "20 routes + kind: Throttle, memory store, account + stage + route tiers (rate and burst 1,000,000: "
        "never refuses, every request takes a token from all three buckets)",
        {"api.yaml": ROUTES_20, "throttle.yaml": throttle_policy()},
        bar=("sidegate-empty", 0.95),
    ),
    Variant(
        "sidegate-throttle-redis",
        "the same three tiers with store: redis://127.0.0.1:PORT/0 (a redis-server started by the script, "
        "--save '' --appendonly no), default store_timeout; one Lua script call per request, or per batch of "
        "requests that arrive while a call is in flight",
        {"api.yaml": ROUTES_20, "throttle.yaml": throttle_policy(REDIS_URL)},
        redis=True,
        bar=("sidegate-empty", 0.85),
    ),
    Variant(
        "sidegate-throttle-redis-t1s",
        "sidegate-throttle-redis with store_timeout: 1s instead of the default (50 ms before commit e9ba526, "
        "250 ms since): under load 50 ms was exceeded by event-loop queueing and requests passed undecided",
        {"api.yaml": ROUTES_20, "throttle.yaml": throttle_policy(REDIS_URL, "store_timeout: 1s\n")},
        redis=True,
        bar=("sidegate-empty", 0.85),
    ),
)
VARIANTS_BY_NAME = {v.name: v for v in VARIANT_LIST}
VARIANTS = tuple(VARIANTS_BY_NAME)  # the variants of this run (--variants narrows it)
DESCRIPTIONS = {v.name: v.description for v in VARIANT_LIST}


# -- child processes ---------------------------------------------------------------------------


class Children:
    """Every process we start, so that ``finally`` can end each one by its pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: list[str], *, log: Path | None = None, env_extra: tuple[tuple[str, str], ...] = ()
    ) -> subprocess.Popen[bytes]:
        out = open(log, "wb") if log else subprocess.DEVNULL  # closed right after Popen
        env = dict(os.environ, **dict(env_extra))
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


def http_get(
    port: int, path: str, timeout: float = 5.0, headers: tuple[tuple[str, str], ...] = ()
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read(4096)
    finally:
        conn.close()


def disturbed(other_cpu_s: float, seconds: float) -> bool:
    """Whether a measurement ran under other load: CPU time the machine spent beyond what our own
    processes used. On an otherwise idle machine this stays near 0 (loopback kernel work is charged
    to the processes); more than 10% of one core for the run's duration counts as disturbed."""
    return other_cpu_s > 0.1 * seconds


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


def ensure_tool(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` with apt-get if it is missing."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(f"bench: {command} is missing; install it (Debian: apt-get install -y {package})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"bench: installing {package} (apt-get install -y {package})", flush=True)
    r = subprocess.run(["apt-get", "install", "-y", package], env=env, capture_output=True, timeout=600)
    if r.returncode != 0:
        print("bench: apt-get install failed; running apt-get update first", flush=True)
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600, check=True)
        subprocess.run(["apt-get", "install", "-y", package], env=env, capture_output=True, timeout=600, check=True)
    found = shutil.which(command)
    if not found:
        raise SystemExit(f"bench: {command} still not found after apt-get install -y {package}")
    return found


def ensure_wrk() -> str:
    return ensure_tool("wrk", "wrk")


# -- redis-server ----------------------------------------------------------------------------------


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port: no persistence, stopped in ``finally``."""

    def __init__(self, children: Children, work: Path) -> None:
        self.binary = ensure_tool("redis-server", "redis-server")
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.log = work / "redis-server.log"
        argv = [
            self.binary, "--bind", LOOPBACK, "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--protected-mode", "yes", "--daemonize", "no", "--dir", str(work), "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = children.start(argv, log=self.log)
        wait_port(self.port, self.proc, timeout=15)
        if self.command("PING") != "PONG":
            raise RuntimeError(f"redis-server on {self.port} did not answer PING:\n{tail(self.log)}")
        self.version = str(self.info("server").get("redis_version", "?"))

    def command(self, *args: str) -> Any:
        """One command over a fresh connection (RESP, no client library needed), 5 s timeout."""
        with socket.create_connection((LOOPBACK, self.port), timeout=5) as sock:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
            sock.sendall(payload.encode())
            f = sock.makefile("rb")
            return _resp(f)

    def info(self, section: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in str(self.command("INFO", section)).splitlines():
            if ":" in line and not line.startswith("#"):
                k, _, v = line.partition(":")
                out[k] = v
        return out

    def decisions(self) -> int | None:
        """Decisions made in Redis since the last FLUSHALL: tokens taken from the counting route tier."""
        tokens = self.command("HGET", f"sidegate:bench:bench:route:{TARGET_ROUTE}", "tokens")
        return None if tokens is None else round(COUNTING_BURST - float(tokens))

    def script_calls(self) -> int:
        """EVAL/EVALSHA calls since the last CONFIG RESETSTAT (the throttle's one call per request)."""
        total = 0
        for k, v in self.info("commandstats").items():
            if k in ("cmdstat_evalsha", "cmdstat_eval"):
                stats = dict(kv.split("=", 1) for kv in v.split(","))
                # a NOSCRIPT answer (script not cached yet; the client then loads it) is a failed call
                total += int(stats.get("calls", "0")) - int(stats.get("failed_calls", "0"))
        return total

    def reset(self) -> None:
        self.command("FLUSHALL")
        self.command("CONFIG", "RESETSTAT")


def _resp(f: Any) -> Any:
    line = f.readline()
    if not line:
        raise RuntimeError("redis-server closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"redis error: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp(f) for _ in range(n)]
    raise RuntimeError(f"unexpected redis reply {line!r}")


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
    children: Children,
    wrk: str,
    port: int,
    seconds: float,
    args: argparse.Namespace,
    headers: tuple[tuple[str, str], ...] = (),
    script: Path | None = None,
) -> tuple[dict[str, Any], str]:
    argv = [
        wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "5s", "--latency",
        *(a for name, value in headers for a in ("-H", f"{name}: {value}")),
        *(("-s", str(script)) if script is not None else ()),
        f"http://{LOOPBACK}:{port}{TARGET_PATH}",
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
    redis_cpu_us_per_req: float | None = None  # the throttle-redis variant's redis-server CPU


def access_log_path(work: Path, variant: str, instance: str = "") -> Path:
    return work / f"access-{variant}{instance}.log"


def proxy_argv(
    variant: str, backend_port: int, port: int, admin_port: int, work: Path, instance: str = ""
) -> list[str]:
    reverse = f"reverse:http://{LOOPBACK}:{backend_port}"
    if variant == "mitmdump":
        return [
            str(VENV_BIN / "mitmdump"), "--mode", reverse, "--listen-host", LOOPBACK, "--listen-port", str(port),
            "-q", "--set", "connection_strategy=lazy",
        ]  # fmt: skip
    policies = policy_dir(work, variant)
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
        "--set", f"sidegate_access_log={access_log_path(work, variant, instance)}",
        "--set", f"sidegate_admin={LOOPBACK}:{admin_port}",
        "--set", "sidegate_reload_interval=0",
    ]  # fmt: skip


def policy_dir(work: Path, variant: str) -> Path:
    return work / f"policies-{variant.removeprefix('sidegate-')}"


def write_policies(work: Path, redis_url: str | None) -> None:
    for v in VARIANT_LIST:
        if not v.sidegate:
            continue
        d = policy_dir(work, v.name)
        d.mkdir(exist_ok=True)
        for name, text in v.policies.items():
            (d / name).write_text(text.replace(REDIS_URL, redis_url or "redis://127.0.0.1:1/0"))


def access_log_check(path: Path, expect_route: str | None = None, max_cut: int = 0) -> dict[str, Any]:
    """Read the whole access log: statuses, routes, outcomes and flags of every request.

    ``access_log_ok``: every line is a 200 from ``expect_route``, allowed, without flags (a Redis
    store error, for instance, shows as a ``store_unavailable`` flag) and without report-only
    findings, except at most ``max_cut`` requests cut off by the client (wrk closes its connections
    with requests in flight when a run ends: no status, outcome error, "Client disconnected.").
    """
    try:
        data = path.read_bytes()
    except OSError:
        return {"access_log": "missing", "access_log_ok": False}
    statuses: dict[str, int] = {}
    routes: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    flags: dict[str, int] = {}
    bad_lines = cut = clean = 0
    last: dict[str, Any] = {}
    for raw in data.splitlines():
        try:
            last = json.loads(raw)
        except ValueError:
            bad_lines += 1
            continue
        if last.get("status") is None and last.get("error") == "Client disconnected.":
            cut += 1
            continue
        if last.get("status") == 200 and not last.get("flags") and not last.get("report_only"):
            clean += 1
        for counts, key in ((statuses, str(last.get("status"))), (routes, str(last.get("route"))),
                            (outcomes, str(last.get("outcome")))):  # fmt: skip
            counts[key] = counts.get(key, 0) + 1
        for f in (last.get("flags") or []) + (last.get("report_only") or []):
            name = f"{f.get('plugin')}:{f.get('reason')}"
            flags[name] = flags.get(name, 0) + 1
    lines = sum(statuses.values())
    ok = (
        lines > 0
        and not bad_lines
        and cut <= max_cut
        and statuses == {"200": lines}
        and outcomes == {"allowed": lines}
        and not flags
        and (expect_route is None or routes == {expect_route: lines})
    )
    return {
        "access_log_lines": lines,  # requests answered (cut ones not included)
        "access_log_ok": ok,
        "access_log_clean_200": clean,  # 200, no flags, no report-only findings
        "access_log_cut_by_client": cut,
        "access_log_statuses": statuses,
        "access_log_routes": routes,
        "access_log_outcomes": outcomes,
        "access_log_flags": flags,
        "access_log_unparsed_lines": bad_lines,
        "last_route": last.get("route"),
        "last_status": last.get("status"),
        "last_outcome": last.get("outcome"),
        "last_checkpoint_us": last.get("checkpoint_us"),
        "last_integration_us": last.get("integration_us"),
    }


def start_proxy(
    children: Children, variant: str, backend_port: int, work: Path, log: Path, instance: str = ""
) -> tuple[subprocess.Popen[bytes], int, dict[str, Any]]:
    """Start one variant's proxy on free ports and probe it: (process, port, checks). The probe must
    answer 200 (and carry the variant's expected headers); the caller stops the process.
    ``instance`` tells apart two proxies of the same variant running at once (their access logs)."""
    spec = VARIANTS_BY_NAME[variant]
    port, admin_port = free_port(), free_port()
    while admin_port == port:
        admin_port = free_port()
    access_log_path(work, variant, instance).unlink(missing_ok=True)
    argv = proxy_argv(variant, backend_port, port, admin_port, work, instance)
    proc = children.start(argv, log=log, env_extra=spec.env)
    try:
        wait_port(port, proc)
        checks: dict[str, Any] = {}
        status, headers, body = http_get(port, TARGET_PATH, headers=spec.headers)
        checks["probe_status"] = status
        checks["probe_body"] = body[:200].decode(errors="replace")
        if spec.sidegate:
            checks["probe_request_id"] = headers.get("x-amzn-requestid")
            try:
                checks["readyz"] = http_get(admin_port, "/readyz")[0]
            except OSError as e:
                checks["readyz"] = f"error: {e}"
        if status != 200:
            raise RuntimeError(f"{variant}: probe GET {TARGET_PATH} answered {status}: {body[:300]!r}")
        if spec.expect_headers:
            checks["probe_headers"] = {h: headers.get(h) for h in spec.expect_headers}
            missing = [h for h in spec.expect_headers if h not in headers]
            if missing:
                raise RuntimeError(f"{variant}: probe answer lacks {missing}: {headers}")
            acao = headers.get("access-control-allow-origin")
            if acao is not None and acao != BENCH_ORIGIN:
                raise RuntimeError(f"{variant}: access-control-allow-origin is {acao!r}, expected {BENCH_ORIGIN!r}")
    except BaseException:
        children.stop(proc)
        raise
    return proc, port, checks


def wrk_script(work: Path, variant: str) -> Path | None:
    spec = VARIANTS_BY_NAME[variant]
    if not spec.wrk_script:
        return None
    script = work / f"{variant}.lua"
    script.write_text(spec.wrk_script)
    return script


def measure(
    children: Children, wrk: str, variant: str, backend: subprocess.Popen[bytes], backend_port: int,
    work: Path, args: argparse.Namespace, rnd: int, position: int, redis: RedisServer | None = None,
) -> Measurement:  # fmt: skip
    spec = VARIANTS_BY_NAME[variant]
    log = work / f"{variant}-r{rnd}.out"
    access = access_log_path(work, variant)
    waited = wait_quiet(args.quiet_wait)
    if spec.redis:
        if redis is None:
            raise RuntimeError(f"{variant} needs the redis-server")
        redis.reset()  # no buckets, command statistics from zero
    proc, port, checks = start_proxy(children, variant, backend_port, work, log)
    checks["waited_for_quiet_s"] = waited
    ours = {backend.pid, os.getpid()} | ({redis.proc.pid} if redis is not None else set())
    redis_cpu = rcpu0 = rcpu1 = None
    try:
        script = wrk_script(work, variant)
        warm, _ = run_wrk(children, wrk, port, args.warmup, args, spec.headers, script)
        procs0 = process_cpu_table()
        if redis is not None:
            rcpu0 = cpu_seconds(redis.proc.pid)
            calls0 = redis.script_calls() if spec.redis else 0
        cpu0, bcpu0, sys0 = cpu_seconds(proc.pid), cpu_seconds(backend.pid), system_busy_seconds()
        result, _ = run_wrk(children, wrk, port, args.duration, args, spec.headers, script)
        cpu1, bcpu1, sys1 = cpu_seconds(proc.pid), cpu_seconds(backend.pid), system_busy_seconds()
        if redis is not None:
            rcpu1 = cpu_seconds(redis.proc.pid)
            redis_cpu = None if rcpu0 is None or rcpu1 is None else rcpu1 - rcpu0
            if spec.redis:  # script calls during the measured run (several requests per call under load)
                checks["redis_script_calls_measured"] = redis.script_calls() - calls0
        checks["foreign_processes"] = foreign_cpu(procs0, process_cpu_table(), ours | {proc.pid})
        if proc.poll() is not None:
            raise RuntimeError(f"{variant} exited with {proc.returncode} during the run:\n{tail(log)}")
        checks["rss_mb"] = rss_mb(proc.pid)
        try:  # the proxy still answers after the load
            checks["after_status"] = http_get(port, TARGET_PATH, headers=spec.headers)[0]
        except OSError as e:
            checks["after_status"] = f"error: {e}"
        if spec.sidegate:
            # warm-up and measured run each end with up to one request in flight per connection
            checks.update(access_log_check(access, spec.expect_route, max_cut=2 * args.connections + 2))
            if spec.redis and redis is not None:
                calls = checks["redis_script_calls_total"] = redis.script_calls()
                decided = checks["redis_decisions_total"] = redis.decisions() or 0
                checks["redis_keys"] = redis.command("DBSIZE")
                # Decisions that arrive while a script call is in flight share the next call, so
                # calls <= decisions. Every request decided in Redis (probes and warm-up included)
                # took one token from the counting route tier: each clean 200 in the access log, plus
                # possibly requests cut off by wrk after their decision and decisions that ran in
                # Redis but whose answer came after the store timeout.
                clean, cut = checks.get("access_log_clean_200", 0), checks.get("access_log_cut_by_client", 0)
                unavailable = checks.get("access_log_flags", {}).get("throttle:store_unavailable", 0)
                checks["redis_decisions_match_log"] = clean <= decided <= clean + cut + unavailable
                checks["redis_requests_per_call"] = round(decided / calls, 2) if calls else None
                # at least this many decisions ran in Redis after sidegate had given up on them
                checks["redis_decisions_after_timeout_min"] = max(0, decided - clean - cut) if unavailable else 0
                if not checks["redis_decisions_match_log"] or calls > decided:
                    checks["access_log_ok"] = False
        if "origin.yaml" in spec.policies:
            # After the log was read: without the secret the policy must refuse (it was really on).
            try:
                no_secret = tuple((k, v) for k, v in spec.headers if k != "x-origin-verify")
                checks["probe_without_secret"] = http_get(port, TARGET_PATH, headers=no_secret)[0]
            except OSError as e:
                checks["probe_without_secret"] = f"error: {e}"
            if checks["probe_without_secret"] != 403:
                checks["access_log_ok"] = False
    finally:
        children.stop(proc)
    if spec.sidegate:
        access.unlink(missing_ok=True)  # it grows by ~0.5 KB per request
    n = result.get("requests") or 0
    proxy_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    backend_cpu = None if bcpu0 is None or bcpu1 is None else bcpu1 - bcpu0
    if None not in (sys0, sys1, proxy_cpu, backend_cpu):
        # Busy CPU of the whole machine not spent by the proxy, the backend, redis-server or wrk
        # (kernel work for loopback traffic partly lands here too): large values mean something else ran.
        busy = sys1 - sys0  # type: ignore[operator]
        checks["system_busy_s"] = round(busy, 2)
        checks["other_cpu_s"] = round(
            busy - proxy_cpu - backend_cpu - (redis_cpu or 0.0) - result.get("wrk_cpu_s", 0),  # type: ignore[operator]
            2,
        )
        checks["disturbed"] = disturbed(checks["other_cpu_s"], result.get("seconds", args.duration))
    if redis_cpu is not None:
        checks["redis_cpu_s"] = round(redis_cpu, 3)
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
        redis_cpu_us_per_req=None if redis_cpu is None or not n or not spec.redis else round(redis_cpu * 1e6 / n, 1),
    )


# -- paired measurement of the bars --------------------------------------------------------------


def measure_paired(
    children: Children, wrk: str, variant: str, baseline: str, backend: subprocess.Popen[bytes],
    backend_port: int, work: Path, args: argparse.Namespace, redis: RedisServer | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One bar, measured with its two proxies running side by side: short ``wrk`` slices alternate
    between them (baseline then variant, variant then baseline, ...), each proxy idle while the
    other is loaded. The separate 10-second runs of the rounds lie a minute or more apart, and on
    this kind of machine identical configurations drift apart by up to 8% over that time; here the
    two sides of every pair are seconds apart and swap places from pair to pair, so slow drift
    falls on both alike. A process also keeps its own small speed advantage or handicap for life
    (memory layout, hash seeds: two instances of one configuration differed by 3%), so the pairs
    are spread over ``--paired-rounds`` fresh pairs of processes, started in alternating order.
    With ``variant == baseline`` (two instances of one configuration) it measures how far the
    method itself strays from 1.0."""
    names = (baseline, variant)
    instances = ("", "-b") if variant == baseline else ("", "")
    specs = [VARIANTS_BY_NAME[n] for n in names]
    if any(spec.redis for spec in specs) and redis is None:
        raise RuntimeError(f"{variant}/{baseline} need the redis-server")
    scripts = [wrk_script(work, n) for n in names]
    slices: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    waited = 0.0
    for rnd in range(args.paired_rounds):
        if any(spec.redis for spec in specs):
            redis.reset()  # type: ignore[union-attr]
        waited += wait_quiet(args.quiet_wait)
        started: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
        round_checks: dict[int, dict[str, Any]] = {}
        try:
            for side in (0, 1) if rnd % 2 == 0 else (1, 0):
                n, instance = names[side], instances[side]
                log = work / f"{n}{instance}-paired-r{rnd}.out"
                proc, port, round_checks[side] = start_proxy(children, n, backend_port, work, log, instance)
                started[side] = (proc, port)
            for side in (0, 1):
                run_wrk(children, wrk, started[side][1], args.warmup, args, specs[side].headers, scripts[side])
            pids = [backend.pid, started[0][0].pid, started[1][0].pid] + ([redis.proc.pid] if redis else [])
            for i in range(args.paired_slices):
                for side in (0, 1) if i % 2 == 0 else (1, 0):
                    slices.append(
                        paired_slice(children, wrk, args, started[side][1], specs[side], scripts[side], pids, side)
                    )
                    slices[-1].update({"round": rnd, "pair": rnd * args.paired_slices + i})
            for side in (0, 1):
                proc = started[side][0]
                n, instance, spec = names[side], instances[side], specs[side]
                if proc.poll() is not None:
                    raise RuntimeError(f"{n}{instance} exited with {proc.returncode} during the paired run")
                if spec.sidegate:  # each slice and the warm-up end with up to one request in flight per connection
                    cut = (args.paired_slices + 1) * (args.connections + 1)
                    path = access_log_path(work, n, instance)
                    round_checks[side].update(access_log_check(path, spec.expect_route, max_cut=cut))
        finally:
            for proc, _ in started.values():
                children.stop(proc)
            for n, instance in zip(names, instances, strict=True):
                access_log_path(work, n, instance).unlink(missing_ok=True)
        checks += [dict(round_checks[side], side=("baseline", "variant")[side], round=rnd) for side in (0, 1)]
    return {
        "variant": variant,
        "baseline": baseline,
        "slice_seconds": args.paired_slice,
        "rounds": args.paired_rounds,
        "waited_for_quiet_s": waited,
        **paired_summary(slices),
        "access_log_ok": all(c.get("access_log_ok") is not False for c in checks),
        "checks": checks,
        "slices": slices,
    }


def paired_slice(
    children: Children, wrk: str, args: argparse.Namespace, port: int, spec: Variant, script: Path | None,
    pids: list[int], side: int,
) -> dict[str, Any]:  # fmt: skip
    """One wrk slice against one side of a pair; ``pids``: backend, baseline, variant (, redis)."""
    cpu0 = [cpu_seconds(pid) for pid in pids]
    busy0 = system_busy_seconds()
    result, _ = run_wrk(children, wrk, port, args.paired_slice, args, spec.headers, script)
    busy1 = system_busy_seconds()
    used = [
        b - a if a is not None and b is not None else 0.0 for a, b in zip(cpu0, map(cpu_seconds, pids), strict=True)
    ]
    other = None if busy0 is None or busy1 is None else busy1 - busy0 - sum(used) - result.get("wrk_cpu_s", 0)
    seconds = result.get("seconds") or args.paired_slice
    return {
        "side": "variant" if side else "baseline",
        "rps": result["rps"],
        "requests": result.get("requests", 0),
        "seconds": seconds,
        "proxy_cpu_s": round(used[1 + side], 3),
        "errors": result.get("non_2xx_3xx", 0) + sum(result.get("socket_errors", {}).values()),
        "other_cpu_s": None if other is None else round(other, 2),
        "disturbed": other is not None and disturbed(other, seconds),
    }


def paired_summary(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """The variant's requests/s over the baseline's, from the pairs of slices that no other load
    disturbed (all pairs if none is clean): each side's requests over its seconds, summed over the
    pairs; also each round's and each pair's ratio and the proxies' CPU per request.

    The 95% interval resamples rounds (pairs of processes), then pairs within each chosen round,
    with replacement (fixed seed: reproducible), so that it covers both the slice-to-slice noise
    and each process's own lasting speed."""
    pairs = sorted({s["pair"] for s in slices})
    clean = {p for p in pairs if not any(s["disturbed"] for s in slices if s["pair"] == p)}
    used = [p for p in pairs if p in clean] or pairs
    by_pair: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {p: ([], []) for p in used}
    for s in slices:
        if s["pair"] in by_pair:
            by_pair[s["pair"]][s["side"] == "variant"].append(s)
    round_of = {s["pair"]: s["round"] for s in slices}
    rounds: dict[int, list[int]] = {}
    for p in used:
        rounds.setdefault(round_of[p], []).append(p)

    def ratio(chosen: list[int]) -> float | None:
        totals = [[0, 0.0], [0, 0.0]]  # requests, seconds per side
        for p in chosen:
            for side in (0, 1):
                for s in by_pair[p][side]:
                    totals[side][0] += s["requests"]
                    totals[side][1] += s["seconds"]
        if not (totals[0][0] and totals[0][1] and totals[1][1]):
            return None
        return (totals[1][0] / totals[1][1]) / (totals[0][0] / totals[0][1])

    def cpu_us(side: int) -> float | None:
        rows = [s for p in used for s in by_pair[p][side]]
        requests = sum(s["requests"] for s in rows)
        return round(sum(s["proxy_cpu_s"] for s in rows) * 1e6 / requests, 1) if requests else None

    rng = random.Random(0)
    boot = []
    for _ in range(2000 if len(used) > 1 else 0):
        chosen = [rng.choice(rounds[r]) for r in rng.choices(list(rounds), k=len(rounds)) for _ in rounds[r]]
        if (value := ratio(chosen)) is not None:
            boot.append(value)
    boot.sort()
    interval = [round(boot[int(0.025 * len(boot))], 3), round(boot[int(0.975 * len(boot)) - 1], 3)] if boot else None
    per_pair = [round(r, 3) for p in used if (r := ratio([p])) is not None]
    per_round = [round(r, 3) for ps in rounds.values() if (r := ratio(ps)) is not None]
    overall = ratio(used)
    base_cpu, var_cpu = cpu_us(0), cpu_us(1)
    return {
        "pairs": len(pairs),
        "pairs_used": len(used),
        "disturbed_pairs": len(pairs) - len(clean),
        "ratio": None if overall is None else round(overall, 3),
        "ratio_interval_95": interval,
        "ratio_per_round": per_round,
        "ratio_per_pair": per_pair,
        "ratio_per_pair_median": round(statistics.median(per_pair), 3) if per_pair else None,
        "proxy_cpu_us_per_req_baseline": base_cpu,
        "proxy_cpu_us_per_req_variant": var_cpu,
        # the baseline's CPU per request over the variant's: what the throughput ratio would be if
        # the proxy alone set the pace
        "cpu_ratio": round(base_cpu / var_cpu, 3) if base_cpu and var_cpu else None,
        "errors": sum(s["errors"] for s in slices),
    }


def summarise(measurements: list[Measurement]) -> dict[str, dict[str, Any]]:
    """Median of each figure over the rounds, per variant (and best rps for reference)."""
    out: dict[str, dict[str, Any]] = {}
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
            "redis_cpu_us_per_req_median": med("redis_cpu_us_per_req"),
            # sidegate: every access-log line a 200 from the expected route, no flags (see access_log_check)
            "access_log_ok": None
            if variant == "mitmdump"
            else all(m.checks.get("access_log_ok") is True for m in every),
            "access_log_problems": access_log_problems(every),
            "access_log_lines_total": sum(m.checks.get("access_log_lines", 0) for m in every),
        }
        out[variant] = row
    rounds = sorted({m.round for m in measurements})
    baselines = {"mitmdump", "sidegate-empty"} | {v.bar[0] for v in VARIANT_LIST if v.bar is not None}
    baselines |= {v.compare for v in VARIANT_LIST if v.compare}
    for baseline in sorted(baselines):
        suffix = baseline.replace("-", "_")
        base = out[baseline]["rps_median"] if baseline in out else None
        for variant, row in out.items():
            row[f"ratio_to_{suffix}"] = round(row["rps_median"] / base, 3) if base else None
            # Ratios within each round (same conditions, close in time).
            per_round = []
            for r in rounds:
                b = next((m.rps for m in measurements if m.round == r and m.variant == baseline), None)
                v = next((m.rps for m in measurements if m.round == r and m.variant == variant), None)
                if b and v:
                    per_round.append(round(v / b, 3))
            row["ratio_per_round" if baseline == "mitmdump" else f"ratio_per_round_to_{suffix}"] = per_round
            if row[f"ratio_to_{suffix}"] is None and baseline not in ("mitmdump", "sidegate-empty"):
                del row[f"ratio_to_{suffix}"], row[f"ratio_per_round_to_{suffix}"]  # not measured this run
    return out


def access_log_problems(ms: list[Measurement]) -> dict[str, int]:
    """What failed the access-log checks of these runs, summed: non-200 statuses, other routes, flags."""
    out: dict[str, int] = {}
    for m in ms:
        c = m.checks
        if c.get("access_log_ok") is not False:
            continue
        problems = {f"status {k}": v for k, v in c.get("access_log_statuses", {}).items() if k != "200"}
        problems.update({f"flag {k}": v for k, v in c.get("access_log_flags", {}).items()})
        if len(c.get("access_log_routes", {})) > 1:
            problems.update({f"route {k}": v for k, v in c["access_log_routes"].items()})
        if c.get("redis_decisions_match_log") is False:
            problems["runs where decisions in redis != requests in the access log"] = 1
        if c.get("probe_without_secret") not in (None, 403):
            problems[f"probe without secret answered {c['probe_without_secret']}"] = 1
        if c.get("access_log") == "missing":
            problems["access log missing"] = 1
        problems.setdefault("runs failing the check", 0)
        problems["runs failing the check"] += 1
        for k, v in problems.items():
            out[k] = out.get(k, 0) + v
    return out


def paired_runs(slices: int, chosen: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """(variant, baseline) of every bar whose two sides are in this run, and, with sidegate-empty,
    sidegate-empty against a second instance of itself (how far the method strays from 1.0); or the
    pairs chosen with ``--pairs variant:baseline,...``."""
    if not slices:
        return []
    if chosen:
        return chosen
    runs = [
        (v.name, v.bar[0])
        for v in VARIANT_LIST
        if v.bar is not None and v.name in VARIANTS and v.bar[0] in VARIANTS and v.bar[0] != "mitmdump"
    ]
    return ([("sidegate-empty", "sidegate-empty")] if "sidegate-empty" in VARIANTS else []) + runs


def bars(summary: dict[str, dict[str, Any]], paired: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each variant's bar: requests/s ratio to its baseline, no errors, access log as expected.

    Decided on the paired measurement where there is one (both proxies side by side, alternating
    slices: see ``measure_paired``), else on the median over the rounds; both figures are shown."""
    by_variant = {(p["variant"], p["baseline"]): p for p in paired or ()}
    out = []
    for v in VARIANT_LIST:
        if v.bar is None or v.name not in summary:
            continue
        baseline, minimum = v.bar
        row = summary[v.name]
        key = "ratio_to_" + baseline.replace("-", "_")
        sequential = row.get(key) if baseline in summary else None
        pair = by_variant.get((v.name, baseline))
        errs = row["non_2xx_3xx_total"] + row["socket_errors_total"] + (pair["errors"] if pair else 0)
        log_ok = row.get("access_log_ok") is not False and (pair is None or pair["access_log_ok"])
        ratio = pair["ratio"] if pair is not None else sequential
        met = ratio is not None and ratio >= minimum and not errs and log_ok
        figures = f"median of the rounds {sequential:.3f}" if sequential is not None else f"no {baseline} figure"
        if pair is not None and pair["ratio"] is not None:
            figures = f"side by side {paired_text(pair)}; {figures}"
        text = (
            f"{v.name} ≥ {minimum:.0%} of {baseline} requests/s (same run): {figures}"
            + f" → {'met' if met else 'NOT met'}"
            + (f"; {errs} non-2xx/socket errors" if errs else "")
            + (
                ""
                if log_ok
                else f"; access-log check failed: {row.get('access_log_problems')} "
                f"in {row.get('access_log_lines_total')} requests logged over all runs"
            )
        )
        out.append({"variant": v.name, "baseline": baseline, "minimum": minimum, "ratio": ratio,
                    "ratio_sequential": sequential, "ratio_paired": pair["ratio"] if pair else None, "met": met,
                    "text": text})  # fmt: skip
    return out


def compared(summary: dict[str, dict[str, Any]]) -> list[str]:
    """Ratios reported without a bar (``Variant.compare``)."""
    out = []
    for v in VARIANT_LIST:
        if v.compare and v.name in summary and v.compare in summary:
            ratio = summary[v.name].get("ratio_to_" + v.compare.replace("-", "_"))
            out.append(f"{v.name} {fmt(ratio, 3)} of {v.compare} requests/s (median, same run; no bar)")
    return out


# -- in-process microbenchmark -------------------------------------------------------------------


def microbench(
    policy_dir: Path,
    iterations: int,
    warmup: int,
    path: str,
    expect_route: str,
    headers: tuple[tuple[str, str], ...] = (),
    expect_plugins: tuple[str, ...] = (),
    variant: str = "",
) -> Coroutine[Any, Any, dict[str, Any]]:
    """Per-request cost of the checkpoint hooks, driven directly (no proxy, no network).

    ``headers`` are added to every request; ``expect_plugins`` must all appear in the first
    request's trace (the policy under test really ran).
    """
    from mitmproxy.test import taddons, tflow, tutils

    from addons.gateway import Sidegate, settle_heap
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
            # The heap as a running sidecar holds it: collected, then set aside from the cyclic
            # collector (Sidegate.running does the same), so collections cost what they cost there.
            settle_heap()
            for i in range(warmup + iterations):
                f = tflow.tflow(req=tutils.treq(path=path.encode(), content=b"", headers=_headers(headers)))
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
                    ran = {t.get("plugin") for t in meta.get("trace", [])}
                    if missing := [p for p in expect_plugins if p not in ran]:
                        raise RuntimeError(f"microbench: plugins {missing} did not run (trace: {sorted(ran)})")
                    if meta.get("flags") or meta.get("report_only") or meta.get("outcome") != "allowed":
                        raise RuntimeError(f"microbench: unexpected findings {meta}")
                if meta.get("status") != 200:
                    raise RuntimeError(f"microbench: request {i} answered {meta.get('status')}")
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
                "variant": variant,
                "policy": policy.summary(),
                "headers": [name for name, _ in headers],
                "plugins": [t.get("plugin") for t in (first_meta or {}).get("trace", [])],
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


def _headers(extra: tuple[tuple[str, str], ...] = ()) -> Any:
    from mitmproxy import http

    return http.Headers(
        [
            (b"host", b"127.0.0.1:8080"),
            (b"user-agent", b"bench/1"),
            (b"accept", b"*/*"),
            *((name.lower().encode(), value.encode()) for name, value in extra),
        ]
    )


# -- throttle decision microbenchmarks -------------------------------------------------------------


def _stats_us(samples_ns: list[int]) -> dict[str, float]:
    xs = sorted(samples_ns)
    n = len(xs)
    return {
        "mean_us": round(sum(xs) / n / 1000, 2),
        "p50_us": round(xs[n // 2] / 1000, 2),
        "p99_us": round(xs[min(n - 1, int(n * 0.99))] / 1000, 2),
        "max_us": round(xs[-1] / 1000, 2),
    }


def throttle_specs() -> list[Any]:
    """The three buckets a request takes a token from in the throttle variants (same keys as sidegate's)."""
    from addons.throttle.buckets import BucketSpec

    prefix = "bench:bench"
    return [
        BucketSpec(f"{prefix}:account", "account", 1_000_000.0, 1_000_000),
        BucketSpec(f"{prefix}:stage", "stage", 1_000_000.0, 1_000_000),
        BucketSpec(f"{prefix}:route:{TARGET_ROUTE}", "route", 1_000_000.0, 1_000_000),
    ]


def waf_costs(requests: int) -> dict[str, Any]:
    """Issue 5's in-process WAF figures, from the tree under test: a small GET and a 4 KB JSON body
    with every managed group, and 10, 100 and 1,000 custom regex rules (bar: 1,000 cost at most 3 times 10)."""
    sys.path.insert(0, str(SOURCE / "bench"))
    try:
        import waf_eval
    finally:
        sys.path.remove(str(SOURCE / "bench"))
    out: dict[str, Any] = dict(waf_eval.measure(requests))
    ratio = out["custom_regex_1000_over_10"]
    met = ratio <= 3.0
    verdict = "met" if met else "NOT met"
    text = f"1,000 custom regex rules cost {ratio:.2f} times what 10 cost (bar: at most 3) → {verdict}"
    out["bar"] = {"ratio": ratio, "met": met, "text": text}
    return out


def micro_throttle_memory(iterations: int, warmup: int) -> dict[str, Any]:
    """``MemoryStore.acquire`` with three BucketSpecs, timed per call (monotonic clock read included)."""
    import gc

    from addons.throttle.buckets import MemoryStore

    store = MemoryStore()
    specs = throttle_specs()
    clock, now = time.perf_counter_ns, time.monotonic
    samples: list[int] = []
    gc.collect()
    cpu0 = 0
    for i in range(warmup + iterations):
        if i == warmup:
            cpu0 = time.process_time_ns()
        t0 = clock()
        decision = store.acquire(specs, now())
        t1 = clock()
        if not decision.admitted:
            raise RuntimeError("micro_throttle_memory: a request was refused")
        if i >= warmup:
            samples.append(t1 - t0)
    cpu = time.process_time_ns() - cpu0
    return {
        "store": "memory",
        "tiers": len(specs),
        "iterations": iterations,
        **_stats_us(samples),
        "client_cpu_us": round(cpu / iterations / 1000, 2),
    }


async def micro_throttle_redis(url: str, iterations: int, warmup: int, server_pid: int) -> dict[str, Any]:
    """``await RedisStore.acquire`` with three BucketSpecs against the script's redis-server, one at a
    time (no concurrency: the round trip plus the Lua script), and a PING round trip for reference."""
    from addons.throttle.redis_store import RedisStore, StoreUnavailable

    # The policy's default store_timeout (50 ms): a call slower than that would be a store error.
    store = RedisStore(url, timeout=0.05)
    specs = throttle_specs()
    clock = time.perf_counter_ns
    samples: list[int] = []
    pings: list[int] = []
    errors = 0
    cpu0 = server0 = 0.0
    try:
        for i in range(warmup + iterations):
            if i == warmup:
                cpu0, server0 = time.process_time(), cpu_seconds(server_pid) or 0.0
            t0 = clock()
            try:
                decision = await store.acquire(specs)
            except StoreUnavailable:
                errors += 1
                await asyncio.sleep(1.05)  # the circuit breaker stays open for 1 s
                continue
            t1 = clock()
            if not decision.admitted:
                raise RuntimeError("micro_throttle_redis: a request was refused")
            if i >= warmup:
                samples.append(t1 - t0)
        cpu, server = time.process_time() - cpu0, (cpu_seconds(server_pid) or 0.0) - server0
        for i in range(warmup + iterations):
            t0 = clock()
            await store.call("PING")
            t1 = clock()
            if i >= warmup:
                pings.append(t1 - t0)
    finally:
        await store.close()
    if not samples:
        raise RuntimeError(f"micro_throttle_redis: every call failed ({errors} store errors)")
    return {
        "store": "redis",
        "tiers": len(specs),
        "iterations": len(samples),
        "store_errors": errors,
        **_stats_us(samples),
        # CPU per call: this process (redis.asyncio client, asyncio, the store's own code) and
        # redis-server (the Lua script); both in clock ticks, so only rough at 1000s of calls.
        "client_cpu_us": round(cpu * 1e6 / max(1, len(samples)), 1),
        "server_cpu_us": round(server * 1e6 / max(1, len(samples)), 1),
        "ping": _stats_us(pings),
    }


# -- memory with many clients (issue 4 item 9) -----------------------------------------------------

MEMORY_SAMPLE_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)  # of --memory-keys: 50k, 100k, ... 1M


def _vm_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def memory_child(kind: str, keys: int) -> dict[str, Any]:
    """Run in a child process: bucket ``keys`` distinct clients, sampling VmRSS along the way.

    ``store``: ``MemoryStore()`` (default bound) and one ``acquire`` per client key, each a per-client
    route bucket keyed like sidegate's (``api:stage:route:KEY:<16 hex of sha256>``).
    ``throttle``: a ``Throttle`` (account tier + a route tier with ``key: [ip]``) whose
    ``method_request`` is called with a minimal stand-in exchange per fake client IP (10.x.y.z).
    """
    import gc
    import hashlib
    import types

    from mitmproxy import http as mhttp

    from addons.policy.models import ApiPolicy, ThrottlePolicy
    from addons.throttle import Throttle
    from addons.throttle.buckets import BucketSpec, MemoryStore

    main_marks = {max(1, round(keys * f)) for f in MEMORY_SAMPLE_FRACTIONS}
    marks = sorted(main_marks | {max(1, round(keys * i / 40)) for i in range(1, 41)})  # the JSON's finer series
    gc.collect()
    rss0 = _vm_kb("VmRSS")
    now = time.monotonic
    if kind == "store":
        store = MemoryStore()
        bound = store.max_buckets
        prefix = f"bench:bench:route:{TARGET_ROUTE}:"

        def step(i: int) -> None:
            key = prefix + hashlib.sha256(b"%d" % i).hexdigest()[:16]
            if not store.acquire([BucketSpec(key, "route", 10.0, 20)], now()).admitted:
                raise RuntimeError("memory_child: a new client was refused")

        def buckets() -> int:  # the per-client buckets, which the bound applies to
            return store.evictable
    elif kind == "throttle":
        api = ApiPolicy.model_validate({"kind": "Api", "name": "bench", "stage": "bench", "routes": {TARGET_ROUTE: {}}})
        policy = ThrottlePolicy.model_validate(
            {
                "kind": "Throttle",
                "account": {"rate": 1_000_000, "burst": 1_000_000},
                "routes": {TARGET_ROUTE: {"rate": 10, "burst": 20, "key": ["ip"]}},
            }
        )
        throttle = Throttle(policy, api, "bench", enforced=True)
        bound = throttle.store.max_buckets
        conn = types.SimpleNamespace(peername=("10.0.0.1", 40000), certificate_list=[])
        request = types.SimpleNamespace(headers=mhttp.Headers(host="127.0.0.1"), method="GET")
        flow = types.SimpleNamespace(client_conn=conn, request=request)
        route = types.SimpleNamespace(key=TARGET_ROUTE)
        ex: Any = types.SimpleNamespace(flow=flow, request=request, route=route, vars={}, details={})

        def step(i: int) -> None:
            conn.peername = (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 40000)
            ex.vars, ex.details = {}, {}
            if throttle.method_request(ex) is not None:
                raise RuntimeError(f"memory_child: client {conn.peername[0]} was refused")

        def buckets() -> int:  # the per-client buckets (the account tier's own is kept apart)
            return throttle.store.evictable
    else:
        raise ValueError(kind)

    samples = [{"keys": 0, "rss_mb": round(rss0 / 1024, 1), "buckets": 0, "elapsed_s": 0.0, "main": True}]
    started = time.monotonic()
    done = 0
    for mark in marks:  # bounded: ``keys`` steps in all
        for i in range(done, mark):
            step(i)
        done = mark
        samples.append(
            {
                "keys": mark,
                "rss_mb": round(_vm_kb("VmRSS") / 1024, 1),
                "buckets": buckets(),
                "elapsed_s": round(time.monotonic() - started, 2),
                "main": mark in main_marks,
            }
        )
    elapsed = time.monotonic() - started
    return {
        "kind": kind,
        "keys": keys,
        "max_buckets": bound,
        "samples": samples,
        "peak_rss_mb": round(_vm_kb("VmHWM") / 1024, 1),
        "us_per_key": round(elapsed * 1e6 / keys, 2),
    }


def memory_test(kind: str, keys: int, timeout: float) -> dict[str, Any]:
    """Run ``memory_child`` in a fresh Python process and judge whether RSS stays flat past the bound."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--memory-child", kind, "--memory-keys", str(keys),
            "--source", str(SOURCE)]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE), env.get("PYTHONPATH", "")) if p)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=SOURCE, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"memory child ({kind}) exited with {r.returncode}:\n{r.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    samples = out["samples"]
    # Flat: from the first sample at which the store holds its bound, RSS grows by less than 5 %
    # (of the RSS at that point) however many more clients arrive.
    at_bound = next((x for x in samples if x["buckets"] >= out["max_buckets"]), None)
    if at_bound is None:
        out["flat"] = None
        out["verdict"] = f"the bound ({out['max_buckets']}) was never reached with {keys} keys"
        return out
    later = [x for x in samples if x["keys"] > at_bound["keys"]]
    growth = max((x["rss_mb"] for x in later), default=at_bound["rss_mb"]) - at_bound["rss_mb"]
    out["bound_reached_at_keys"] = at_bound["keys"]
    out["growth_after_bound_mb"] = round(growth, 1)
    out["mb_per_100k_buckets"] = round((at_bound["rss_mb"] - samples[0]["rss_mb"]) * 100_000 / at_bound["buckets"], 1)
    out["buckets_bounded"] = all(x["buckets"] <= out["max_buckets"] for x in samples)
    out["growth_after_bound_pct"] = round(100 * growth / at_bound["rss_mb"], 1)
    # RSS over the last quarter of the keys against everything before it: still rising at the end?
    last_quarter = [x["rss_mb"] for x in samples if x["keys"] > 0.75 * keys]
    earlier = [x["rss_mb"] for x in samples if at_bound["keys"] <= x["keys"] <= 0.75 * keys]
    out["growth_in_last_quarter_mb"] = round(max(last_quarter) - max(earlier), 1) if last_quarter and earlier else None
    grew = growth >= 0.05 * at_bound["rss_mb"]
    out["flat"] = bool(later) and not grew and out["buckets_bounded"]
    peak = max((x for x in samples if x["keys"] >= at_bound["keys"]), key=lambda x: x["rss_mb"])
    out["verdict"] = (
        f"RSS {at_bound['rss_mb']:.1f} MB at {at_bound['keys']:,} keys (bound of {out['max_buckets']:,} buckets "
        f"reached), {samples[-1]['rss_mb']:.1f} MB at {samples[-1]['keys']:,} keys (highest {peak['rss_mb']:.1f} MB, "
        f"first at {peak['keys']:,}): {growth:+.1f} MB ({out['growth_after_bound_pct']:+.1f} %) after the bound, "
        f"{out['growth_in_last_quarter_mb']:+.1f} MB in the last quarter → "
        + ("flat (< 5 % growth after the bound)" if out["flat"] else "NOT flat")
        + (" (≥ 5 % growth after the bound)" if grew else "")
        + ("" if out["buckets_bounded"] else "; the per-client bucket count exceeded the bound")
    )
    return out


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
    lines: list[str] = []
    if result["summary"]:
        lines += [
            f"Measured {result['timestamp']} on {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}); "
            f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s --latency, keep-alive, "
            f"{s['rounds']} round(s) per variant in alternating order; figures are medians over the runs "
            "not disturbed by other load on the machine (* in the last column marks a disturbed run). "
            "wrk, the proxy, the backend (and redis-server) share the same cores.",
            "",
            "| variant | requests/s (median) | p50 ms | p99 ms | proxy CPU µs/req | ratio to mitmdump "
            "| ratio to sidegate-empty | access log | per-round rps |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for variant, row in result["summary"].items():
            lines.append(
                f"| {variant} | {row['rps_median']:.0f} | {fmt(row['p50_ms_median'])} | "
                f"{fmt(row['p99_ms_median'])} | {fmt(row['proxy_cpu_us_per_req_median'], 0)} | "
                f"{fmt(row['ratio_to_mitmdump'])} | {fmt(row.get('ratio_to_sidegate_empty'))} | "
                f"{access_log_text(row)} | {per_round(row)} |"
            )
        disturbed = {v: r["disturbed_runs"] for v, r in result["summary"].items() if r.get("disturbed_runs")}
        lines += [
            "",
            f"Measured: {result['label'] or result['versions'].get('source')}. "
            + (
                f"Runs still disturbed by other load on the machine after retries: {disturbed}; "
                f"{len(result['discarded_disturbed'])} disturbed run(s) were measured again."
                if disturbed
                else f"No kept run was disturbed by other load ({len(result['discarded_disturbed'])} disturbed "
                "run(s) were measured again)."
            ),
        ]
        redis_cpu = {
            v: r["redis_cpu_us_per_req_median"]
            for v, r in result["summary"].items()
            if r.get("redis_cpu_us_per_req_median") is not None
        }
        if redis_cpu:
            lines += ["", f"redis-server CPU per request (median µs): {redis_cpu}."]
        if result.get("paired"):
            lines += ["", *paired_lines(result["paired"])]
        if result.get("bars"):
            lines += ["", "Bars (same run):", ""] + [f"- {b['text']}" for b in result["bars"]]
            lines += [f"- also: {line}" for line in compared(result.get("summary", {}))]
    micro = result.get("microbench", [])
    if micro:
        lines += [
            "",
            f"In-process, {micro[0]['iterations']} requests per policy ({TARGET_PATH}), mean µs per request, "
            "wall (hook call) / recorded checkpoint_us:",
            "",
            "| checkpoint | " + " | ".join(mb["variant"] or mb["policy"] for mb in micro) + " |",
            "| --- |" + " ---: |" * len(micro),
        ]
        for h in micro[0]["wall_us"]:
            lines.append(
                f"| {h} | "
                + " | ".join(f"{mb['wall_us'][h]:.1f} / {mb['checkpoint_us_mean'][h]:.1f}" for mb in micro)
                + " |"
            )
        lines.append(
            "| **total** | "
            + " | ".join(f"**{mb['wall_total_us']:.1f}** / {mb['checkpoint_us_total']:.1f}" for mb in micro)
            + " |"
        )
    waf = result.get("waf_cost_us")
    if waf:
        lines += [
            "",
            "WAF, all nine managed groups, in-process CPU µs per request (`bench/waf_eval.py`; 'distinct': a new "
            "user agent and query argument per request; 'all new': every value new):",
            "",
            "| measurement | µs |",
            "| --- | ---: |",
        ]
        lines += [f"| {k} | {v:.1f} |" for k, v in waf.items() if k != "bar"]
        lines += ["", f"- {waf['bar']['text']}"]
    throttle = result.get("microbench_throttle", [])
    if throttle:
        lines += [
            "",
            "Throttle decision, three tiers (account, stage, route), sequential calls, µs per request:",
            "",
            "| store | calls | mean | p50 | p99 | max | CPU µs/call (sidegate side / redis-server) | note |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for t in throttle:
            note = "`MemoryStore.acquire(specs, time.monotonic())`"
            if "ping" in t:
                note = (
                    "`await RedisStore.acquire(specs)` (one EVALSHA); a PING round trip: "
                    f"p50 {t['ping']['p50_us']:.1f}, p99 {t['ping']['p99_us']:.1f}; "
                    f"store errors {t.get('store_errors', 0)}"
                )
            lines.append(
                f"| {t['store']} | {t['iterations']} | {t['mean_us']:.2f} | {t['p50_us']:.2f} | {t['p99_us']:.2f} | "
                f"{t['max_us']:.2f} | {t.get('client_cpu_us', 'n/a')}"
                + (f" / {t['server_cpu_us']}" if "server_cpu_us" in t else "")
                + f" | {note} |"
            )
    memory = result.get("memory_many_clients", [])
    if memory:
        lines += [
            "",
            "Memory with many distinct clients (child process, VmRSS in MB; default bound 100,000 buckets):",
            "",
            "| clients | " + " | ".join(f"{x['keys']:,}" for x in memory[0]["samples"] if x.get("main")) + " |",
            "| --- |" + " ---: |" * sum(1 for x in memory[0]["samples"] if x.get("main")),
        ]
        for mem in memory:
            lines.append(
                f"| {mem['kind']} (RSS / buckets) | "
                + " | ".join(f"{x['rss_mb']:.1f} / {x['buckets']:,}" for x in mem["samples"] if x.get("main"))
                + " |"
            )
        lines.append("")
        lines += [f"- {mem['kind']}: {mem['verdict']}; {mem['us_per_key']} µs per client key" for mem in memory]
    return "\n".join(lines)


def paired_text(p: dict[str, Any]) -> str:
    pairs = p["ratio_per_pair"]
    spread = f"single pairs {min(pairs)} to {max(pairs)}, median {p['ratio_per_pair_median']}" if pairs else "no pair"
    interval = p.get("ratio_interval_95")
    return (
        f"{fmt(p['ratio'], 3)}"
        + (f" (95% interval {interval[0]} to {interval[1]})" if interval else "")
        + f" over {p['pairs_used']} pairs of {p['slice_seconds']:g}-s slices from {p['rounds']} pairs of processes "
        f"(per pair of processes {p['ratio_per_round']}; {spread}; proxy CPU per request "
        f"{p['proxy_cpu_us_per_req_baseline']} → {p['proxy_cpu_us_per_req_variant']} µs)"
        + (f"; {p['disturbed_pairs']} pair(s) disturbed by other load, left out" if p["disturbed_pairs"] else "")
    )


def paired_lines(paired: list[dict[str, Any]]) -> list[str]:
    """One line per side-by-side measurement (see ``measure_paired``)."""
    out = []
    for p in paired:
        what = "a second instance of itself" if p["variant"] == p["baseline"] else p["baseline"]
        out.append(f"side by side: {p['variant']} over {what}: {paired_text(p)}")
    return out


def access_log_text(row: dict[str, Any]) -> str:
    ok = row.get("access_log_ok")
    return "n/a" if ok is None else ("all 200, expected route" if ok else "**FAILED**")


def print_table(summary: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n{'variant':<28} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>10} {'÷mitm':>6} {'÷empty':>6} "
        f"{'log':>4}  per round"
    )
    for variant, row in summary.items():
        log = {None: "-", True: "ok", False: "FAIL"}[row.get("access_log_ok")]
        print(
            f"{variant:<28} {row['rps_median']:>7.0f} {fmt(row['p50_ms_median']):>7} {fmt(row['p99_ms_median']):>7} "
            f"{fmt(row['proxy_cpu_us_per_req_median'], 0):>10} {fmt(row['ratio_to_mitmdump']):>6} "
            f"{fmt(row.get('ratio_to_sidegate_empty')):>6} {log:>4}  {per_round(row)}"
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
    global SOURCE, VARIANTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, choices=(1, 2), help="wrk threads (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per variant, alternating order (default 3)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of wrk warm-up per proxy (default 2)")
    parser.add_argument("--iterations", type=int, default=5000, help="microbenchmark requests (default 5000)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 s runs, 2 rounds, 1 s warm-up, one pair of proxies with 2 paired 1 s slices, 2000 iterations",
    )
    parser.add_argument("--skip-micro", action="store_true", help="no in-process microbenchmarks")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated end-to-end variants (default: all): " + ", ".join(VARIANTS),
    )
    parser.add_argument("--skip-e2e", action="store_true", help="no end-to-end (wrk) measurements")
    parser.add_argument("--skip-memory", action="store_true", help="no memory test with many clients")
    parser.add_argument(
        "--memory-keys", type=int, default=1_000_000, help="distinct client keys in the memory test (default 1000000)"
    )
    parser.add_argument("--memory-child", choices=("store", "throttle"), help=argparse.SUPPRESS)
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
    parser.add_argument(
        "--paired-slices",
        type=int,
        default=10,
        help="after the rounds, measure each bar again with both proxies side by side: this many pairs of "
        "alternating wrk slices per pair of proxies (default 10; 0: none)",
    )
    parser.add_argument("--paired-slice", type=float, default=2, help="seconds per paired slice (default 2)")
    parser.add_argument(
        "--paired-rounds", type=int, default=4, help="fresh pairs of proxies per side-by-side measurement (default 4)"
    )
    parser.add_argument(
        "--pairs",
        default="",
        help="side-by-side measurements to make instead of the bars', as variant:baseline,... (any two variants, "
        "or one twice)",
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
    SOURCE = args.source.resolve()
    if not (SOURCE / "addons" / "gateway.py").is_file() or not (SOURCE / "mitm_config.yaml").is_file():
        parser.error(f"--source {SOURCE}: no addons/gateway.py and mitm_config.yaml there")
    args.memory_keys = max(1000, min(args.memory_keys, 5_000_000))
    if args.memory_child:  # internal: the child process of the memory test
        sys.path.insert(0, str(SOURCE))
        print(json.dumps(memory_child(args.memory_child, args.memory_keys)))
        return 0
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [v for v in wanted if v not in VARIANTS_BY_NAME]:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS_BY_NAME)}")
    VARIANTS = tuple(v for v in VARIANTS_BY_NAME if v in wanted)  # always in the table's order
    chosen_pairs: list[tuple[str, str]] = []
    for pair in filter(None, (p.strip() for p in args.pairs.split(","))):
        sides = pair.split(":")
        if len(sides) != 2 or any(side not in VARIANTS_BY_NAME for side in sides):
            parser.error(f"--pairs: {pair!r} is not variant:baseline with two of {', '.join(VARIANTS_BY_NAME)}")
        chosen_pairs.append((sides[0], sides[1]))
    if args.skip_e2e:
        VARIANTS = ()
    args.output = args.output.resolve()
    if args.quick:
        args.duration, args.rounds, args.warmup, args.iterations = min(args.duration, 3), 2, 1, 2000
        args.paired_slices, args.paired_slice, args.paired_rounds = min(args.paired_slices, 2), 1, 1
    args.rounds = max(1, min(args.rounds, 10))
    args.duration = max(1.0, min(args.duration, 300.0))
    args.iterations = max(100, min(args.iterations, 200_000))
    args.retries = max(0, min(args.retries, 5))
    args.retry_pause = max(0.0, min(args.retry_pause, 60.0))
    args.quiet_wait = max(0.0, min(args.quiet_wait, 600.0))
    args.paired_slices = max(0, min(args.paired_slices, 100))
    args.paired_rounds = max(1, min(args.paired_rounds, 20))
    args.paired_slice = max(1.0, min(args.paired_slice, 60.0))

    os.chdir(SOURCE)
    sys.path.insert(0, str(SOURCE))  # ahead of the editable install's finder
    # Ctrl-C must reach us even when started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _raise_keyboard_interrupt)

    wrk = ensure_wrk() if VARIANTS else "wrk"
    children = Children()
    work = Path(tempfile.mkdtemp(prefix="sidegate-bench-"))
    measurements: list[Measurement] = []
    paired: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    micro: list[dict[str, Any]] = []
    micro_throttle: list[dict[str, Any]] = []
    waf_cost: dict[str, Any] = {}
    memory: list[dict[str, Any]] = []
    discarded: list[dict[str, Any]] = []
    redis: RedisServer | None = None
    redis_version: str | None = None
    started = time.monotonic()
    try:
        if any(VARIANTS_BY_NAME[v].redis for v in VARIANTS) or not args.skip_micro:
            redis = RedisServer(children, work)
            redis_version = redis.version
            print(f"bench: redis-server {redis.version} on {LOOPBACK}:{redis.port} (no persistence)", flush=True)
        write_policies(work, redis.url if redis else None)

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
                    m = measure(children, wrk, variant, backend, backend_port, work, args, rnd, position, redis)
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
                        m = measure(children, wrk, variant, backend, backend_port, work, args, rnd, position, redis)
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
                    + (f", redis CPU {fmt(m.redis_cpu_us_per_req, 0)} µs/req" if m.redis_cpu_us_per_req else "")
                    + (f", non-2xx {m.non_2xx_3xx}" if m.non_2xx_3xx else "")
                    + (
                        f" [ACCESS LOG: {m.checks.get('access_log_statuses')} {m.checks.get('access_log_routes')} "
                        f"flags {m.checks.get('access_log_flags')}]"
                        if m.checks.get("access_log_ok") is False
                        else ""
                    )
                    + (f", socket errors {m.socket_errors}" if errs else "")
                    + (" [DISTURBED by other load]" if m.checks.get("disturbed") else ""),
                    flush=True,
                )
                if backend.poll() is not None:
                    raise RuntimeError(f"the backend exited with {backend.returncode}:\n{tail(work / 'backend.out')}")
        for variant, baseline in paired_runs(args.paired_slices, chosen_pairs):
            label = "the method's own spread" if variant == baseline else "bar"
            print(
                f"bench: paired {variant} / {baseline} ({label}), "
                f"{args.paired_rounds} x {args.paired_slices} pairs ...",
                end=" ",
                flush=True,
            )
            try:
                pr = measure_paired(children, wrk, variant, baseline, backend, backend_port, work, args, redis)
            except (RuntimeError, OSError, http.client.HTTPException) as e:
                failures.append({"variant": f"paired {variant}/{baseline}", "round": 0, "error": str(e)})
                print(f"FAILED: {e}", flush=True)
                continue
            paired.append(pr)
            print(
                paired_text(pr)
                + (f", {pr['errors']} errors" if pr["errors"] else "")
                + ("" if pr["access_log_ok"] else " [ACCESS LOG check failed]"),
                flush=True,
            )
        children.stop(backend)

        if not args.skip_micro:
            print(f"bench: in-process microbenchmark, {args.iterations} requests per policy ...", flush=True)
            for name, value in ORIGIN_ENV:  # the cors-origin policy reads its secrets from the environment
                os.environ[name] = value
            warm = min(500, args.iterations // 10)
            micro_cases = (
                ("sidegate-routes20", ("router",)),
                ("sidegate-empty", ("router",)),
                ("sidegate-cors-origin", ("origin_verify", "cors", "router")),
                ("sidegate-throttle-memory", ("router", "throttle")),
                ("sidegate-throttle-redis", ("router", "throttle")),
                ("sidegate-waf-managed", ("router", "waf")),
            )

            async def all_micro() -> None:
                for variant, plugins in micro_cases:
                    spec = VARIANTS_BY_NAME[variant]
                    if spec.redis and redis is None:
                        continue
                    wait_quiet(min(args.quiet_wait, 30))  # blocking on purpose: nothing else runs here
                    try:
                        run = microbench(
                            policy_dir(work, variant), args.iterations, warm, TARGET_PATH, spec.expect_route,
                            spec.headers, plugins, variant,
                        )  # fmt: skip
                        micro.append(await run)
                    except Exception as e:  # keep the other figures
                        failures.append({"variant": f"microbench {variant}", "round": 0, "error": repr(e)})
                        print(f"bench: microbenchmark {variant} failed: {e!r}", file=sys.stderr)
                if redis is not None:
                    wait_quiet(min(args.quiet_wait, 30))
                    try:
                        micro_throttle.append(
                            await micro_throttle_redis(redis.url, args.iterations, warm, redis.proc.pid)
                        )
                    except Exception as e:
                        failures.append({"variant": "microbench throttle redis", "round": 0, "error": repr(e)})
                        print(f"bench: throttle decision (redis) failed: {e!r}", file=sys.stderr)

            wait_quiet(min(args.quiet_wait, 30))
            try:
                micro_throttle.append(micro_throttle_memory(args.iterations, warm))
            except Exception as e:
                failures.append({"variant": "microbench throttle memory", "round": 0, "error": repr(e)})
                print(f"bench: throttle decision (memory) failed: {e!r}", file=sys.stderr)
            asyncio.run(all_micro())
            wait_quiet(min(args.quiet_wait, 30))
            print("bench: WAF cost per request (bench/waf_eval.py's measurements) ...", flush=True)
            try:
                waf_cost = waf_costs(args.iterations)
            except Exception as e:
                failures.append({"variant": "microbench waf", "round": 0, "error": repr(e)})
                print(f"bench: WAF cost failed: {e!r}", file=sys.stderr)
        if redis is not None:
            children.stop(redis.proc)

        if not args.skip_memory:
            for kind in ("store", "throttle"):
                print(f"bench: memory with {args.memory_keys:,} distinct clients ({kind}) ...", flush=True)
                wait_quiet(min(args.quiet_wait, 30))
                try:
                    memory.append(memory_test(kind, args.memory_keys, timeout=900))
                    print(f"bench:   {memory[-1]['verdict']}", flush=True)
                except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
                    failures.append({"variant": f"memory {kind}", "round": 0, "error": str(e)})
                    print(f"bench: memory test ({kind}) failed: {e}", file=sys.stderr)
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
        "variants": {v: DESCRIPTIONS[v] for v in VARIANTS},
        "routes20_policy": ROUTES_20,
        "policies": {
            v.name: {name: text.replace(REDIS_URL, "redis://127.0.0.1:PORT/0") for name, text in v.policies.items()}
            for v in VARIANT_LIST
            if v.policies and v.name != "sidegate-routes20"
        },
        "wrk_headers": {v: [name for name, _ in VARIANTS_BY_NAME[v].headers] for v in VARIANTS},
        "redis_server": redis_version,
        "summary": summary,
        "bars": bars(summary, paired),
        "paired": paired,
        "measurements": [asdict(m) for m in measurements],
        "failures": failures,
        "discarded_disturbed": discarded,
        "microbench": micro,
        "microbench_throttle": micro_throttle,
        "waf_cost_us": waf_cost,
        "memory_many_clients": memory,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    routes_bar = next((b for b in result["bars"] if b["variant"] == "sidegate-routes20"), None)
    if routes_bar is not None:  # kept under its old name too
        result["bar"] = routes_bar
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")  # before printing: a closed stdout loses nothing
    if summary:
        print_table(summary)
        for line in paired_lines(paired):
            print(f"  {line}")
        for b in result["bars"]:
            print(f"  bar: {b['text']}")
        for line in compared(summary):
            print(f"  also: {line}")
    for mb in micro:
        print(f"\nmicrobench {mb['variant']} ({mb['policy']}; {mb['path']} → {mb['route']}), mean µs/request:")
        for h in mb["wall_us"]:
            print(f"  {h:<22} wall {mb['wall_us'][h]:7.1f}   recorded {mb['checkpoint_us_mean'][h]:7.1f}")
        print(f"  {'total':<22} wall {mb['wall_total_us']:7.1f}   recorded {mb['checkpoint_us_total']:7.1f}")
    for t in micro_throttle:
        print(
            f"\nthrottle decision, {t['store']} store, {t['tiers']} tiers, {t['iterations']} sequential calls: "
            f"mean {t['mean_us']:.2f} µs, p50 {t['p50_us']:.2f}, p99 {t['p99_us']:.2f}, "
            f"CPU {t.get('client_cpu_us')} µs/call"
            + (f" (+ redis-server {t['server_cpu_us']})" if "server_cpu_us" in t else "")
            + (f"; PING round trip p50 {t['ping']['p50_us']:.2f} µs" if "ping" in t else "")
            + (f"; {t['store_errors']} store errors" if t.get("store_errors") else "")
        )
    if waf_cost:
        print("\nWAF, all nine managed groups, in-process CPU µs per request (bench/waf_eval.py):")
        for key, value in waf_cost.items():
            if key != "bar":
                print(f"  {key:<40} {value:8.1f}")
        print(f"  bar: {waf_cost['bar']['text']}")
    for mem in memory:
        print(f"\nmemory, {mem['kind']}: {mem['verdict']}")
        print("  " + ", ".join(f"{x['keys'] // 1000}k {x['rss_mb']:.1f}" for x in mem["samples"]) + " (MB)")
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
