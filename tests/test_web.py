"""`sidegate web`: mitmweb with sidegate; each flow shows its decision in mitmweb's own flow API."""

from __future__ import annotations

import json
import urllib.request

import pytest
from procs import DemoBackend, Sidecar, wait_port

pytestmark = pytest.mark.e2e

PASSWORD = "web-test-token"


def test_mitmweb_lists_flows_with_decision_comment_and_mark(tmp_path):
    backend = DemoBackend()
    sc = Sidecar(
        tmp_path,
        backend.url,
        {"api.yaml": "kind: Api\nroutes:\n  GET /books: {}\n"},
        kind="web",
        sets=["--set", f"web_password={PASSWORD}"],
    )
    try:
        wait_port(sc.web_port, sc.proc)
        assert sc.get("/books").status == 200
        assert sc.get("/nope").status == 403
        with urllib.request.urlopen(f"http://127.0.0.1:{sc.web_port}/flows?token={PASSWORD}", timeout=10) as resp:
            flows = json.loads(resp.read())
        by_path = {f["request"]["path"]: f for f in flows}
        ok, rejected = by_path["/books"], by_path["/nope"]
        assert ok["comment"] == "sidegate: GET /books -> 200" and ok["marked"] == ""
        assert rejected["comment"].startswith("sidegate: 403 MISSING_AUTHENTICATION_TOKEN by router (no_route)")
        assert rejected["marked"] == "\N{NO ENTRY}"  # mitmweb renders :no_entry: as the emoji
        assert rejected["response"]["status_code"] == 403
        # the access log still gets one JSON line per request under mitmweb
        assert [x["status"] for x in sc.log_lines()] == [200, 403]
    finally:
        sc.close()
        backend.close()
