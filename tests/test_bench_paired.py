"""bench/run.py's side-by-side figures: how slices become a ratio, and what the bars are decided on."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sidegate_bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def slice_(rnd, pair, side, requests, seconds=2.0, disturbed=False, cpu=1.8):
    return {"round": rnd, "pair": pair, "side": side, "requests": requests, "seconds": seconds,
            "rps": requests / seconds, "proxy_cpu_s": cpu, "errors": 0, "other_cpu_s": 0.0,
            "disturbed": disturbed}  # fmt: skip


def test_ratio_is_requests_over_seconds_of_each_side_from_the_clean_pairs(bench):
    slices = [
        slice_(0, 0, "baseline", 2000), slice_(0, 0, "variant", 1900),
        slice_(0, 1, "variant", 1700), slice_(0, 1, "baseline", 1800),
        # another load ran during this pair: left out
        slice_(1, 2, "baseline", 1000, disturbed=True), slice_(1, 2, "variant", 2000),
        slice_(1, 3, "variant", 2100, seconds=2.1), slice_(1, 3, "baseline", 2000),
    ]  # fmt: skip
    out = bench.paired_summary(slices)
    assert out["pairs"] == 4 and out["pairs_used"] == 3 and out["disturbed_pairs"] == 1
    expected = ((1900 + 1700 + 2100) / 6.1) / ((2000 + 1800 + 2000) / 6.0)
    assert out["ratio"] == round(expected, 3)
    assert out["ratio_per_pair"] == [0.95, round(1700 / 1800, 3), round((2100 / 2.1) / 1000, 3)]
    assert out["ratio_per_round"] == [round(3600 / 3800, 3), 1.0]
    low, high = out["ratio_interval_95"]
    assert low <= out["ratio"] <= high and low < high
    assert out["proxy_cpu_us_per_req_baseline"] == round(3 * 1.8e6 / 5800, 1)


def test_every_pair_counts_when_none_is_clean(bench):
    slices = [slice_(0, 0, "baseline", 1000, disturbed=True), slice_(0, 0, "variant", 900)]
    out = bench.paired_summary(slices)
    assert out["pairs_used"] == 1 and out["ratio"] == 0.9 and out["ratio_interval_95"] is None


def summary_row(ratio):
    return {"ratio_to_sidegate_empty": ratio, "non_2xx_3xx_total": 0, "socket_errors_total": 0, "access_log_ok": True}


def paired(ratio, errors=0, log_ok=True):
    return {"variant": "sidegate-throttle-memory", "baseline": "sidegate-empty", "ratio": ratio,
            "ratio_interval_95": [ratio - 0.02, ratio + 0.02], "ratio_per_round": [ratio], "ratio_per_pair": [ratio],
            "ratio_per_pair_median": ratio, "pairs_used": 10, "slice_seconds": 2, "rounds": 1,
            "proxy_cpu_us_per_req_baseline": 900.0, "proxy_cpu_us_per_req_variant": 930.0, "disturbed_pairs": 0,
            "errors": errors, "access_log_ok": log_ok}  # fmt: skip


def bar(bench, summary, pairs):
    return next(b for b in bench.bars(summary, pairs) if b["variant"] == "sidegate-throttle-memory")


def test_a_bar_is_decided_on_the_side_by_side_ratio_and_shows_both(bench):
    summary = {"sidegate-empty": summary_row(1.0), "sidegate-throttle-memory": summary_row(0.91)}
    met = bar(bench, summary, [paired(0.97)])
    assert met["met"] and met["ratio"] == 0.97 and met["ratio_sequential"] == 0.91
    assert "side by side 0.97" in met["text"] and "median of the rounds 0.910" in met["text"]
    assert not bar(bench, summary, [paired(0.94)])["met"]
    assert not bar(bench, summary, [paired(0.97, errors=3)])["met"]
    assert not bar(bench, summary, [paired(0.97, log_ok=False)])["met"]
    alone = bar(bench, summary, [])  # no side-by-side measurement: the rounds decide
    assert not alone["met"] and alone["ratio"] == 0.91
