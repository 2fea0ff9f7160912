"""The WAF evaluation corpus: attack and benign API requests, built from the YAML files here.

Each entry names a payload and where it goes (``in``): ``query``, ``raw_query``, ``path``,
``raw_path``, ``header``, ``cookie``, ``form``, ``json``, ``json_key``, ``json_raw``,
``multipart``, ``multipart_filename``, ``xml``, ``body`` or ``method``. Requests get realistic
headers from one of a few client profiles (browser, mobile SDK, service, CLI), chosen by position,
so every request also exercises header inspection with ordinary values.

``attacks/`` and ``benign/`` (one file per class) are the main corpus, ``all_samples()``. The
held-out set, ``heldout/attacks.yaml`` and ``heldout/benign.yaml`` (every entry names its
``class``), was written without reading the managed rules and is never used to tune them: it is
loaded only by ``heldout_samples()`` (ids ``heldout-<class>#n``), never by ``all_samples()``.

Used by ``tests/test_waf_corpus.py`` (in-process) and ``bench/waf_eval.py`` (in-process or
against a running sidegate with ``--url``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import yaml

HERE = Path(__file__).resolve().parent
JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IjNmMmE5YiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20vIiwic3ViIjoi"
    "dXNlcl8yOTQxIiwiYXVkIjoiYXBpLmV4YW1wbGUuY29tIiwiZXhwIjoxNzMyNjQwMDAwLCJzY29wZSI6Im9yZGVyczpyZWFkIG9yZGVyczp3cml0ZSJ9."
    "kPz3n-QwT1c9yXb--Vd2Lr8sUaE0hF6oJm4gNq7tZiW5xKcYpB3uD_eRfHgSlAaM"
)
PROFILES: list[list[tuple[str, str]]] = [
    [  # a browser SPA calling its API
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-GB,en;q=0.9,de;q=0.8"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("origin", "https://app.example.com"),
        ("referer", "https://app.example.com/orders?status=open&sort=-created"),
        ("sec-ch-ua", '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
        ("sec-ch-ua-platform", '"Windows"'),
        ("sec-fetch-mode", "cors"),
        ("authorization", f"Bearer {JWT}"),
        ("cookie", "_ga=GA1.2.1357924680.1714000000; theme=dark; csrftoken=Zx81kP0qLmN3vB6cRt9YwE2a"),
    ],
    [  # a mobile app SDK
        ("host", "api.example.com"),
        ("user-agent", "ExampleShop/5.12.1 (iPhone; iOS 17.4.1; Scale/3.00) okhttp/4.12.0"),
        ("accept", "application/json"),
        ("x-api-key", "k_live_7Hc2Qz9LmP4xWv8RtY1nB5sD"),
        ("x-request-id", "3f6c2a1e-8b4d-4e9a-9c7f-2d5e6b8a1c03"),
        ("x-app-version", "5.12.1 (20240412)"),
        ("accept-language", "ja-JP,ja;q=0.9"),
    ],
    [  # another service behind a load balancer
        ("host", "orders.internal.example.com"),
        ("user-agent", "python-requests/2.31.0"),
        ("accept", "*/*"),
        ("authorization", "Basic c3ZjLWJpbGxpbmc6c2VjcmV0LXRva2VuLTIwMjQ="),
        ("x-forwarded-for", "203.0.113.24, 10.1.4.7"),
        ("x-forwarded-proto", "https"),
        ("x-amzn-trace-id", "Root=1-66284f1e-4b7f0e2c1a9d3b5e6f708192;Parent=53995c3f42cd8ad8;Sampled=1"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ],
    [  # a developer with curl
        ("host", "localhost:8080"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("authorization", f"Bearer {JWT}"),
        ("if-none-match", 'W/"5e8f-1a2b3c4d"'),
    ],
]
DEFAULT_NAME = {"query": "q", "header": "x-client-note", "cookie": "prefs", "form": "comment", "json": "comment",
                "multipart": "description", "multipart_filename": "file"}  # fmt: skip
BOUNDARY = "----sidegateFormBoundary7MA4YWxkTrZu0gW"


@dataclass(frozen=True)
class Sample:
    id: str
    attack: bool
    cls: str  # attack class, or benign theme
    placement: str
    method: str
    target: str  # path and query, percent-encoded
    headers: tuple[tuple[str, str], ...]
    body: bytes
    note: str = ""


def _build(entry: dict[str, Any], index: int, attack: bool, source: str) -> Sample:
    where = entry["in"]
    payload = entry.get("payload", "")
    name = entry.get("name", DEFAULT_NAME.get(where, "value"))
    method = entry.get("method", "GET")
    path = entry.get("path", "/api/v1/items")
    headers = [h for h in PROFILES[index % len(PROFILES)] if h[0] != "cookie" or where != "cookie"]
    body = b""
    content_type = entry.get("content_type")
    if where == "query":
        target = f"{entry.get('path', '/api/v1/search')}?{quote_plus(name)}={quote(payload, safe='')}&page=1"
    elif where == "raw_query":
        target = f"{entry.get('path', '/api/v1/search')}?{payload}"
    elif where == "path":
        target = f"{entry.get('path', '/api/v1/items')}/{quote(payload, safe='')}"
    elif where == "raw_path":
        target = payload
    elif where == "method":
        method, target = payload, path
    else:
        target = path
        if where == "header":
            headers = [h for h in headers if h[0] != name.lower()] + [(name, payload)]
        elif where == "cookie":
            headers.append(("cookie", f"session=9f8e7d6c5b4a; {name}={quote(payload, safe=' =:/$.{}()!*,')}"))
        else:
            method = entry.get("method", "POST")
            if where == "form":
                body = f"{quote_plus(name)}={quote_plus(payload)}&subscribe=true".encode()
                content_type = content_type or "application/x-www-form-urlencoded"
            elif where in ("json", "json_key"):
                doc: dict[str, Any] = {"title": "Order 4411", "quantity": 2}
                if where == "json":
                    doc[name] = payload
                else:
                    doc[payload] = entry.get("value", "x")
                body = json.dumps(doc, ensure_ascii=False).encode()
                content_type = content_type or "application/json"
            elif where == "json_raw":
                body = payload.encode()
                content_type = content_type or "application/json"
            elif where in ("multipart", "multipart_filename"):
                if where == "multipart":
                    part = f'Content-Disposition: form-data; name="{name}"\r\n\r\n{payload}'
                else:
                    part = (f'Content-Disposition: form-data; name="{name}"; filename="{payload}"\r\n'
                            f"Content-Type: application/octet-stream\r\n\r\n%PDF-1.7 binary")  # fmt: skip
                body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"album\"\r\n\r\nholiday\r\n"
                        f"--{BOUNDARY}\r\n{part}\r\n--{BOUNDARY}--\r\n").encode()  # fmt: skip
                content_type = f"multipart/form-data; boundary={BOUNDARY}"
            elif where == "xml":
                body = payload.encode()
                content_type = content_type or "application/xml"
            elif where == "body":
                body = payload.encode()
                content_type = content_type or "text/plain; charset=utf-8"
            else:
                raise ValueError(f"{source}: unknown placement {where!r}")
    if content_type:
        headers.append(("content-type", content_type))
    for k, v in entry.get("headers", {}).items():
        headers = [h for h in headers if h[0] != k.lower()] + [(k, v)]
    if body:
        headers.append(("content-length", str(len(body))))
    return Sample(
        id=f"{source}#{index + 1}",
        attack=attack,
        cls=entry.get("class", source),
        placement=where,
        method=method,
        target=target,
        headers=tuple(headers),
        body=body,
        note=entry.get("note", ""),
    )


def load(kind: str) -> list[Sample]:
    """``kind`` is ``attacks`` or ``benign``."""
    samples: list[Sample] = []
    for path in sorted((HERE / kind).glob("*.yaml")):
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        for i, entry in enumerate(entries):
            samples.append(_build(entry, i, kind == "attacks", path.stem))
    return samples


def load_heldout(kind: str) -> list[Sample]:
    """``heldout/<kind>.yaml`` (``kind`` is ``attacks`` or ``benign``); each entry's ``class`` must
    be one of the main corpus's classes of that kind (attack classes or benign themes)."""
    path = HERE / "heldout" / f"{kind}.yaml"
    classes = {p.stem for p in (HERE / kind).glob("*.yaml")}
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    samples: list[Sample] = []
    numbers: dict[str, int] = {}
    for i, entry in enumerate(entries):
        cls = entry.get("class")
        if cls not in classes:
            raise ValueError(f"heldout/{path.name} entry {i + 1}: class {cls!r} is not one of {sorted(classes)}")
        numbers[cls] = numbers.get(cls, 0) + 1
        sample = _build(entry, i, kind == "attacks", f"heldout-{cls}")
        samples.append(replace(sample, id=f"heldout-{cls}#{numbers[cls]}"))
    return samples


def heldout_samples() -> list[Sample]:
    """The held-out set only (attacks, then benign requests)."""
    return load_heldout("attacks") + load_heldout("benign")


def all_samples(heldout: bool = False) -> list[Sample]:
    """The main corpus (what the floors in ``tests/test_waf_corpus.py`` assert); with ``heldout``,
    the held-out set instead. The two are never mixed."""
    if heldout:
        return heldout_samples()
    return load("attacks") + load("benign")


def flow_for(sample: Sample) -> Any:
    """A mitmproxy flow carrying the sample's request (for in-process evaluation)."""
    from mitmproxy import http
    from mitmproxy.test import tflow, tutils

    headers = http.Headers([(k.encode(), v.encode("utf-8")) for k, v in sample.headers])
    req = tutils.treq(method=sample.method.encode(), path=sample.target.encode(), headers=headers, content=sample.body)
    return tflow.tflow(req=req)


def decide(waf: Any, sample: Sample, policy: Any = None) -> tuple[bool, dict[str, Any]]:
    """Run one sample through a ``Waf`` plugin in-process: (blocked, trace details)."""
    from addons.decision import Exchange, Flag
    from addons.policy.policyset import empty_policy_set

    ex = Exchange(flow_for(sample), policy or empty_policy_set())
    result = waf.method_request(ex)
    details = [ex.details.pop("waf", {})]
    if result is None or isinstance(result, Flag):
        result = waf.method_request_body(ex)
        details.append(ex.details.pop("waf", {}))
    blocked = result is not None and not isinstance(result, Flag)
    return blocked, {"phases": [d for d in details if d]}


def evaluate(waf: Any, samples: list[Sample]) -> dict[str, Any]:
    """Detection (attacks) and false-positive (benign) rates per class, with the misses listed."""
    per: dict[str, dict[str, Any]] = {}
    for sample in samples:
        blocked, detail = decide(waf, sample)
        row = per.setdefault(sample.cls, {"attack": sample.attack, "total": 0, "blocked": 0, "wrong": []})
        row["total"] += 1
        row["blocked"] += blocked
        if blocked != sample.attack:
            matches = [m["rule"] for d in detail["phases"] for m in d.get("matches", [])]
            row["wrong"].append((sample.id, sample.placement, matches))
    return per
