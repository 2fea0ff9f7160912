"""The sidecar fixes glibc's mmap threshold at startup (memory stays flat under churn)."""

from __future__ import annotations

import subprocess
import sys

from addons import allocator


class FakeLibc:
    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


def test_sets_a_fixed_mmap_threshold():
    libc = FakeLibc()
    assert allocator.tune_allocator(libc) is True
    assert libc.calls == [(-3, 512 * 1024), (-1, 1024 * 1024)]  # mmap and trim thresholds, fixed


def test_a_libc_without_mallopt_or_refusing_it_keeps_its_defaults():
    assert allocator.tune_allocator(object()) is False  # e.g. musl
    assert allocator.tune_allocator(FakeLibc(result=0)) is False


def test_the_real_libc_accepts_it_in_a_fresh_process():
    code = "from addons.allocator import tune_allocator; print(tune_allocator())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert out.stdout.strip() == expected


def test_sidegate_run_tunes_the_allocator_before_starting(monkeypatch):
    from addons import cli

    calls = []
    monkeypatch.setattr(allocator, "tune_allocator", lambda: calls.append("tuned") or True)
    monkeypatch.setattr(cli, "launch", lambda *a: calls.append("launched") or 0)
    assert cli.main(["run"]) == 0
    assert calls == ["tuned", "launched"]
