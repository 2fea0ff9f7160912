"""Two real sidecars sharing one real redis-server: WAF rate_based limits hold on their combined
traffic, and counting returns to Redis by itself after a restart."""

from __future__ import annotations

import time

import pytest
from conftest import RedisServer
from procs import DemoBackend, Sidecar, wait_port

pytestmark = pytest.mark.e2e

API = "kind: Api\nname: shop\nstage: prod\nroutes:\n  GET /books: {}\n"
LIMIT = 4
DEGRADED = 'sidegate_store_degraded{plugin="waf"}'


def web_acl(url: str, on_error: str) -> str:
    return (
        f"kind: WebAcl\nstore: {url}\nstore_timeout: 250ms\non_store_error: {on_error}\nreplicas: 2\n"
        "rules:\n  - id: per-client\n    priority: 1\n    action: block\n"
        f"    statement: {{rate_based: {{limit: {LIMIT}, window: 1m, key: ['header:x-client']}}}}\n"
    )


@pytest.fixture
def backend():
    b = DemoBackend()
    yield b
    b.close()


def start_replicas(tmp_path, backend, policies) -> list[Sidecar]:
    replicas = [Sidecar(tmp_path / f"r{i}", backend.url, policies, wait=False) for i in range(2)]
    for sc in replicas:  # started side by side: half the wait
        wait_port(sc.port, sc.proc)
        wait_port(sc.admin_port, sc.proc)
    return replicas


def codes(replicas: list[Sidecar], client: str, n: int) -> list[int]:
    """``n`` requests from one client, alternating between the replicas."""
    return [replicas[i % 2].get("/books", headers={"x-client": client}).status for i in range(n)]


def test_two_replicas_block_on_their_combined_traffic(tmp_path, backend, redis_server):
    replicas = start_replicas(tmp_path, backend, {"api.yaml": API, "waf.yaml": web_acl(redis_server.url, "deny")})
    try:
        # LIMIT requests spread over both replicas pass (each saw only half); the next ones from
        # either replica are blocked. A per-replica counter would have let 2 * LIMIT through.
        assert codes(replicas, "ana", LIMIT) == [200] * LIMIT
        assert codes(replicas, "ana", 2) == [403, 403]
        assert codes(replicas, "bob", 1) == [200]  # another client has its own counter
        assert [k.split(":")[:3] for k in redis_server.keys()] == [["sidegate", "waf", "per-client"]] * 2
    finally:
        for sc in replicas:
            sc.close()
    blocked = [line for sc in replicas for line in sc.log_lines() if line["status"] == 403]
    assert len(blocked) == 2


def test_counting_returns_to_redis_after_a_restart(tmp_path, backend):
    redis = RedisServer()
    replicas = start_replicas(tmp_path, backend, {"api.yaml": API, "waf.yaml": web_acl(redis.url, "allow")})
    try:
        assert codes(replicas, "ana", 2) == [200, 200]
        redis.stop()  # killed: on_store_error allow lets requests through, uncounted
        assert codes(replicas, "ana", 2) == [200, 200]
        assert [sc.metrics()[DEGRADED] for sc in replicas] == [1.0, 1.0]
        redis = RedisServer(redis.port)  # back on the same port, empty
        deadline = time.monotonic() + 5
        while any(sc.metrics()[DEGRADED] for sc in replicas) and time.monotonic() < deadline:
            codes(replicas, "probe", 2)  # another client: its counts do not matter
            time.sleep(0.1)
        assert [sc.metrics()[DEGRADED] for sc in replicas] == [0.0, 0.0]
        # counted in Redis again, on the traffic of both replicas
        assert codes(replicas, "ana", LIMIT + 1) == [200] * LIMIT + [403]
        assert "sidegate:waf:per-client" in "".join(redis.keys())
    finally:
        for sc in replicas:
            sc.close()
        redis.stop()
    for sc in replicas:
        stderr = sc.stderr()
        assert "WAF rate store redis://127.0.0.1" in stderr and "unavailable" in stderr and "is back" in stderr
