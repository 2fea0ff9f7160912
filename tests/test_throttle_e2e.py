"""Two real sidecars sharing one real redis-server: limits hold across replicas; Redis outages."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import RedisServer
from procs import DemoBackend, Sidecar

pytestmark = pytest.mark.e2e

API = "kind: Api\nname: shop\nstage: prod\nroutes:\n  GET /books: {}\n"
RATE, BURST, SECONDS = 20, 10, 10.0


def throttle(url: str, on_error: str = "allow", timeout: str = "250ms") -> str:
    return (
        f"kind: Throttle\nstore: {url}\nstore_timeout: {timeout}\non_store_error: {on_error}\nreplicas: 2\n"
        f"routes:\n  GET /books: {{rate: {RATE}, burst: {BURST}}}\n"
    )


@pytest.fixture
def backend():
    b = DemoBackend()
    yield b
    b.close()


def test_two_replicas_together_admit_rate_times_seconds_plus_burst(tmp_path, backend, redis_server):
    # deny on store errors: a decision Redis did not make must never be counted as admitted
    policies = {"api.yaml": API, "t.yaml": throttle(redis_server.url, on_error="deny", timeout="1s")}
    replicas = [Sidecar(tmp_path / f"r{i}", backend.url, policies) for i in range(2)]
    admitted: list[float] = []
    other: list[int] = []
    lock = threading.Lock()
    start = time.monotonic()

    def client(sc: Sidecar) -> None:
        while time.monotonic() - start < SECONDS:
            sent = time.monotonic()
            r = sc.get("/books")
            with lock:
                if r.status == 200:
                    # Redis decided somewhere between sending and receiving: take the midpoint.
                    admitted.append((sent + time.monotonic()) / 2)
                elif r.status != 429:
                    other.append(r.status)  # a 503 here would mean Redis failed to decide

    try:
        with ThreadPoolExecutor(max_workers=6) as pool:  # several times the limit, split over both replicas
            for i in range(6):
                pool.submit(client, replicas[i % 2])
    finally:
        for sc in replicas:
            sc.close()
    assert other == []
    admitted.sort()
    elapsed = admitted[-1] - admitted[0]
    expected = RATE * elapsed + BURST
    total = sum(1 for line in replicas[0].log_lines() + replicas[1].log_lines() if line["status"] == 429)
    assert total > len(admitted)  # the load really was several times the limit
    assert abs(len(admitted) - expected) <= 0.02 * expected, (len(admitted), expected)


def test_redis_killed_and_restarted_under_load(tmp_path, backend):
    redis = RedisServer()
    sc = Sidecar(tmp_path, backend.url, {"api.yaml": API, "t.yaml": throttle(redis.url, on_error="local")})
    statuses: list[int] = []
    durations: list[float] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            statuses.append(sc.get("/books").status)
            durations.append(time.monotonic() - t0)

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(1.0)
        assert redis.keys("sidegate:*")
        redis.stop()  # killed mid-run
        time.sleep(2.0)
        degraded = sc.metrics()['sidegate_store_degraded{plugin="throttle"}']
        redis = RedisServer(redis.port)  # back on the same port, empty
        time.sleep(2.0)
        assert redis.keys("sidegate:*"), "sidegate did not return to Redis"
        recovered = sc.metrics()['sidegate_store_degraded{plugin="throttle"}']
    finally:
        stop.set()
        t.join()
        redis.stop()
        sc.close()
    assert set(statuses) <= {200, 429} and statuses.count(200) > 0
    assert max(durations) < 2.0  # no hung requests
    assert (degraded, recovered) == (1.0, 0.0)
    assert "throttle store redis://127.0.0.1" in sc.stderr() and "unavailable" in sc.stderr()
    assert "is back" in sc.stderr()
    local = [line for line in sc.log_lines() if line["status"] in (200, 429)]
    assert len(local) == len(statuses)


def test_sidegate_keys_reads_the_running_store(tmp_path, backend, monkeypatch):
    import json
    import subprocess

    from procs import PYTHON, env

    key = "keysCMDplanted1234567890"
    plans = (
        "kind: UsagePlans\nquota_file: state/q.sqlite\nplans:\n  gold:\n    throttle: {rate: 0.01, burst: 5}\n"
        "    quota: {limit: 10, period: DAY}\nkeys:\n  partner: {value: {secret_env: K}, plan: gold}\n"
    )
    api = "kind: Api\nname: shop\nstage: prod\nroutes:\n  GET /books: {api_key_required: true}\n"
    sc = Sidecar(tmp_path, backend.url, {"api.yaml": api, "plans.yaml": plans}, extra_env={"K": key})
    try:
        for _ in range(3):
            assert sc.get("/books", headers={"x-api-key": key}).status == 200
        out = subprocess.run(
            [PYTHON, "-m", "addons.cli", "keys", "--config", "mitm_config.yaml", "--json"],
            cwd=sc.dir,
            capture_output=True,
            text=True,
            env=env(),
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        [entry] = json.loads(out.stdout)
        assert entry["key_id"] == "partner" and entry["plan"] == "gold" and entry["enabled"] is True
        assert (entry["quota"]["used"], entry["quota"]["remaining"], entry["quota"]["limit"]) == (3, 7, 10)
        [bucket] = entry["buckets"]
        assert bucket["tier"] == "plan" and 2.0 <= bucket["tokens"] < 2.1
        table = subprocess.run(
            [PYTHON, "-m", "addons.cli", "keys", "--admin", f"127.0.0.1:{sc.admin_port}"],
            cwd=sc.dir,
            capture_output=True,
            text=True,
            env=env(),
            timeout=30,
        )
        assert "partner" in table.stdout and "7/10 left (DAY)" in table.stdout and key not in table.stdout
    finally:
        sc.close()
    down = subprocess.run(
        [PYTHON, "-m", "addons.cli", "keys", "--admin", f"127.0.0.1:{sc.admin_port}"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=30,
    )
    assert down.returncode == 1 and "is the sidecar running?" in down.stderr
