"""Origin secret rotation against a running sidecar: no request with a valid secret is refused."""

from __future__ import annotations

import threading
import time

import pytest
from procs import DemoBackend, Sidecar

pytestmark = pytest.mark.e2e

A, B = "rotation-A-PLANTED-11aa", "rotation-B-PLANTED-22bb"
API = "kind: Api\nroutes:\n  GET /books: {}\n  GET /health: {}\n"


def origin(*names: str, extra: str = "") -> str:
    refs = "\n".join(f"  - {{secret_env: {n}}}" for n in names)
    return f"kind: OriginVerify\nheader: x-origin-verify\nsecrets:\n{refs}\nexempt_routes: [GET /health]\n{extra}"


def _wait_generation(sc: Sidecar, above: float, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gen = sc.metrics()["sidegate_policy_generation"]
        if gen > above:
            return gen
        time.sleep(0.05)
    raise AssertionError("policy reload not applied")


@pytest.fixture
def backend():
    b = DemoBackend()
    yield b
    b.close()


def test_rotation_procedure_drops_no_traffic(tmp_path, backend):
    sc = Sidecar(
        tmp_path,
        backend.url,
        {"api.yaml": API, "origin.yaml": origin("ORIGIN_SECRET_A")},
        sets=["--set", f"save_stream_file={tmp_path / 'flows.mitm'}"],
        extra_env={"ORIGIN_SECRET_A": A, "ORIGIN_SECRET_B": B},
    )
    cdn = {"secret": A}  # what the CDN currently sends
    statuses: list[tuple[str, int]] = []
    stop = threading.Event()

    def traffic():
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            secret = cdn["secret"]
            statuses.append((secret, sc.get("/books", headers={"x-origin-verify": secret}).status))

    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(0.5)
        gen = sc.metrics()["sidegate_policy_generation"]
        # 1. add the new secret as current, keep the old one as previous
        sc.write_policy("origin.yaml", origin("ORIGIN_SECRET_B", "ORIGIN_SECRET_A"))
        gen = _wait_generation(sc, gen)
        time.sleep(0.3)
        # 2. switch the CDN to the new secret
        cdn["secret"] = B
        time.sleep(0.5)
        # 3. remove the old secret
        sc.write_policy("origin.yaml", origin("ORIGIN_SECRET_B"))
        _wait_generation(sc, gen)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    assert len(statuses) > 30
    assert {s for _, s in statuses} == {200}, [x for x in statuses if x[1] != 200][:5]
    assert {secret for secret, _ in statuses} == {A, B}
    assert sc.get("/books", headers={"x-origin-verify": A}).status == 403  # the retired secret is refused now
    assert sc.get("/books").status == 403
    assert sc.get("/health").status == 200  # exempt
    sc.close()
    recorded = sc.stdout_path.read_text() + sc.stderr() + (tmp_path / "flows.mitm").read_bytes().decode("latin-1")
    assert A not in recorded and B not in recorded


def test_secret_file_change_is_picked_up_by_hot_reload(tmp_path, backend):
    (tmp_path / "certs").mkdir(parents=True)
    secret_file = tmp_path / "certs" / "origin-secret"
    secret_file.write_text(A + "\n")
    sc = Sidecar(
        tmp_path,
        backend.url,
        {
            "api.yaml": API,
            "origin.yaml": "kind: OriginVerify\nsecrets: [{secret_file: certs/origin-secret}]\n",
        },
    )
    try:
        assert sc.get("/books", headers={"x-origin-verify": A}).status == 200
        gen = sc.metrics()["sidegate_policy_generation"]
        secret_file.write_text(B + "\n")  # e.g. a mounted Kubernetes secret being updated
        _wait_generation(sc, gen)
        assert sc.get("/books", headers={"x-origin-verify": B}).status == 200
        assert sc.get("/books", headers={"x-origin-verify": A}).status == 403
    finally:
        sc.close()
