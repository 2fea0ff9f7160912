"""WAF evaluation: detection and false-positive rates per class over tests/waf_corpus, and the
per-request cost of the WAF in microseconds.

    .venv/bin/python bench/waf_eval.py                       # in-process, all managed groups
    .venv/bin/python bench/waf_eval.py --url http://127.0.0.1:8080   # through a running sidegate
    .venv/bin/python bench/waf_eval.py --perf                # also measure µs per request
    .venv/bin/python bench/waf_eval.py --heldout -v          # the held-out set instead (either mode)

``--heldout`` evaluates tests/waf_corpus/heldout/ instead of the main corpus: samples written
without reading the managed rules and never used to tune them, so its rates are the fairer estimate
of unseen traffic (see tests/waf_corpus/README.md); it combines with ``--url``.

Through a running sidegate (its policies enable the WAF with the managed groups), a request
counts as blocked when the answer is 403 with ``x-amzn-ErrorType: ForbiddenException`` (API
Gateway's WAF_FILTERED), or 400 ``BadRequestException`` when the proxy's own HTTP validation
refused it before the WAF saw it (listed separately); the corpus paths should be routable
(``$default``).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "waf_corpus"))

import corpus  # noqa: E402

from addons.waf import Waf, WebAclPolicy  # noqa: E402
from addons.waf.managed import all_groups_policy  # noqa: E402


def managed_waf() -> Waf:
    return Waf(WebAclPolicy.model_validate({"kind": "WebAcl", "rules": all_groups_policy()}), "bench", enforced=True)


def send(url: str, sample: corpus.Sample, timeout: float) -> str | None:
    """How the request was stopped: "waf" (403 WAF_FILTERED), "proxy" (a 400 gateway answer: the
    proxy's own HTTP validation refused it before any plugin, e.g. a smuggling-prone
    Transfer-Encoding), or None (it reached the backend)."""
    # UTF-8 on the wire, as the in-process run builds them (http.client sends str headers as Latin-1)
    headers = {
        k: v.encode("utf-8").decode("latin-1") for k, v in sample.headers if k.lower() not in ("host", "content-length")
    }
    req = urllib.request.Request(
        url.rstrip("/") + sample.target, data=sample.body or None, method=sample.method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return None
    except urllib.error.HTTPError as e:
        e.read()
        kind = e.headers.get("x-amzn-ErrorType", "")
        if e.code == 403 and kind == "ForbiddenException":
            return "waf"
        if e.code == 400 and kind == "BadRequestException":
            return "proxy"
        return None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        print(f"  {sample.id}: request failed ({e})", file=sys.stderr)
        return None


def evaluate_url(url: str, samples: list[corpus.Sample], timeout: float) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for sample in samples:
        stopped = send(url, sample, timeout)
        row = per.setdefault(
            sample.cls, {"attack": sample.attack, "total": 0, "blocked": 0, "by_proxy": [], "wrong": []}
        )
        row["total"] += 1
        row["blocked"] += stopped is not None
        if stopped == "proxy":
            row["by_proxy"].append(sample.id)
        if (stopped is not None) != sample.attack:
            row["wrong"].append((sample.id, sample.placement, []))
    return per


def report(per: dict[str, Any], verbose: bool) -> None:
    print(f"{'':7}{'class':24}{'blocked':>9}{'rate':>9}")
    totals = {True: [0, 0], False: [0, 0]}
    for cls, r in sorted(per.items(), key=lambda kv: (not kv[1]["attack"], kv[0])):
        kind = "attack" if r["attack"] else "benign"
        print(f"{kind:7}{cls:24}{r['blocked']:>4}/{r['total']:<4}{r['blocked'] / r['total']:>9.1%}")
        totals[r["attack"]][0] += r["blocked"]
        totals[r["attack"]][1] += r["total"]
        if r.get("by_proxy"):
            print(f"{'':31}of which refused by the proxy's HTTP checks (400), not the WAF: {', '.join(r['by_proxy'])}")
        if verbose:
            for sid, placement, rules in r["wrong"]:
                print(f"        {'missed' if r['attack'] else 'false positive'}: {sid} ({placement}) {rules}")
    (d, dt), (f, ft) = totals[True], totals[False]
    print(f"\ndetection {d}/{dt} = {d / dt:.1%}    false positives {f}/{ft} = {f / ft:.1%}")


# -- cost -------------------------------------------------------------------------------------------


def _exchanges(
    n: int, method: str, target: str, headers: list[tuple[str, str]], body: bytes, vary: bool | str, first: int = 0
) -> list[Any]:
    from mitmproxy import http
    from mitmproxy.test import tflow, tutils

    from addons.decision import Exchange
    from addons.policy.policyset import empty_policy_set

    policy = empty_policy_set()
    out = []
    for i in range(first, first + n):
        h = list(headers)
        t = target
        if vary == "all":  # every value new: nothing for the WAF's memo of values seen before
            h = [(k, f"{v}{i}" if k == "cookie" else f"{v} r{i}") for k, v in h]
            t = f"{target}{i}&r={i}x"
        elif vary:  # a new user agent and query argument per request, the rest repeated as a client does
            h = [(k, f"{v} r{i}" if k == "user-agent" else v) for k, v in h]
            t = f"{target}&r={i}x"
        hh = http.Headers([(k.encode(), v.encode()) for k, v in h])
        req = tutils.treq(method=method.encode(), path=t.encode(), headers=hh, content=body)
        out.append(Exchange(tflow.tflow(req=req), policy))
    return out


def cost_us(waf: Waf, exchanges: Callable[[int, int], list[Any]], n: int, rounds: int = 5) -> float:
    """Median over rounds of CPU µs per request (both WAF phases), measured with process time.

    ``exchanges(count, first)`` builds each round's requests just before it runs (numbered from
    ``first``, so that varied values stay new across rounds), after a full collection: the garbage
    collector runs as usual while timing, over the live objects of one round, not of all of them
    (a proxy holds its in-flight flows, not thousands)."""
    per_round = []
    chunk = n // rounds
    for r in range(rounds):
        batch = exchanges(chunk, r * chunk)
        gc.collect()
        start = time.process_time()
        for ex in batch:
            if waf.method_request(ex) is None:
                waf.method_request_body(ex)
        per_round.append((time.process_time() - start) / len(batch) * 1e6)
    return statistics.median(per_round)


def custom_regex_waf(n: int) -> Waf:
    rules = [
        {
            "id": f"custom-{i}",
            "priority": i,
            "action": "block",
            "statement": {
                "regex": {
                    "field": ["all_query_args", {"header": "user-agent"}, "uri_path"],
                    "pattern": rf"(?:badword{i}[0-9]+|/evil-{i}/[a-z]+|token_{i}_[a-f0-9]{{8}})",
                    "transformations": ["url_decode", "lowercase"],
                }
            },
        }
        for i in range(n)
    ]
    return Waf(WebAclPolicy.model_validate({"kind": "WebAcl", "rules": rules}), "bench", enforced=True)


SMALL_GET = ("GET", "/api/v1/items/42?page=2&sort=name", [
    ("host", "api.example.com"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"),
    ("accept", "application/json"),
    ("accept-language", "en-GB,en;q=0.9"),
    ("authorization", f"Bearer {corpus.JWT}"),
    ("cookie", "theme=dark; session=9f8e7d6c5b4a"),
])  # fmt: skip


def json_4k() -> bytes:
    items = [
        {"sku": f"SKU-{i:04d}", "name": f"Widget {i}", "note": "Gift wrap, please - it's a surprise!", "qty": i % 5 + 1,
         "price": round(4.99 + i, 2), "tags": ["home", "kitchen"]}
        for i in range(22)
    ]  # fmt: skip
    return json.dumps({"customer": {"name": "Ana O'Brien", "email": "ana@example.com"}, "items": items}).encode()


def measure(n: int) -> dict[str, float]:
    waf = managed_waf()
    method, target, headers = SMALL_GET
    body = json_4k()
    post_headers = [*headers, ("content-type", "application/json")]

    def small_get(vary: bool | str) -> Callable[[int, int], list[Any]]:
        return lambda count, first: _exchanges(count, method, target, headers, b"", vary, first)

    def json_post(vary: bool | str) -> Callable[[int, int], list[Any]]:
        return lambda count, first: _exchanges(count, "POST", "/api/v1/orders?x=1", post_headers, body, vary, first)

    out = {
        "managed_small_get_us": cost_us(waf, small_get(False), n),
        "managed_small_get_distinct_us": cost_us(waf, small_get(True), n),
        "managed_small_get_all_new_us": cost_us(waf, small_get("all"), n),
        "managed_json_4k_us": cost_us(waf, json_post(False), n),
        "managed_json_4k_distinct_us": cost_us(waf, json_post(True), n),
        "managed_json_4k_all_new_us": cost_us(waf, json_post("all"), n),
        "json_4k_bytes": float(len(body)),
    }
    for k in (10, 100, 1000):
        custom = custom_regex_waf(k)
        out[f"custom_regex_{k}_small_get_us"] = cost_us(custom, small_get(True), n)
    out["custom_regex_1000_over_10"] = out["custom_regex_1000_small_get_us"] / out["custom_regex_10_small_get_us"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running sidegate (default: evaluate in-process)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--perf", action="store_true", help="also measure the WAF's cost per request")
    parser.add_argument("--requests", type=int, default=2000, help="requests per cost measurement")
    parser.add_argument("-v", "--verbose", action="store_true", help="list misses and false positives")
    parser.add_argument(
        "--heldout", action="store_true", help="evaluate the held-out set (tests/waf_corpus/heldout/) instead"
    )
    args = parser.parse_args()
    samples = corpus.all_samples(heldout=args.heldout)
    name = "held-out corpus" if args.heldout else "corpus"
    if args.url:
        print(f"{name} through {args.url}: {len(samples)} requests")
        per = evaluate_url(args.url, samples, args.timeout)
    else:
        print(f"{name} in-process, all managed groups: {len(samples)} requests")
        per = corpus.evaluate(managed_waf(), samples)
    report(per, args.verbose)
    if args.perf:
        print("\nWAF cost per request (CPU µs, median of 5 rounds; 'distinct' varies values per request):")
        for key, value in measure(args.requests).items():
            print(f"  {key:36} {value:10.1f}")


if __name__ == "__main__":
    main()
