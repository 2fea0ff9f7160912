"""CORS as a real browser sees it: headless Chromium fetches sidegate from pages on other origins.

Pages are served from several host names (app.sidegate.test, a.preview.sidegate.test, ...) that
Chromium resolves to 127.0.0.1 (--host-resolver-rules), and call a running `sidegate run` on
api.sidegate.test; the test reads what the page was allowed to see.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import free_port
from procs import DemoBackend, Sidecar

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP *.sidegate.test 127.0.0.1, MAP evil.test 127.0.0.1",
]

API = """
    kind: Api
    routes:
      GET /books: {}
      POST /books: {}
      PUT /books/{id}: {}
      DELETE /books/{id}: {}
      GET /limited: {}
      GET /slow: {integration: {timeout: 300ms}}
"""
CORS = """
    kind: Cors
    allow_origins:
      - http://app.sidegate.test:{page}
      - http://*.preview.sidegate.test:{page}
    allow_methods: [GET, POST, PUT]
    allow_headers: [content-type, x-api-key]
    expose_headers: [x-amzn-requestid]
    allow_credentials: true
    max_age: 10m
"""
LIMIT = "kind: Plugin\nuse: sample_plugins:RejectPath\nconfig: {path: /limited, type: THROTTLED}\n"

FETCH = """async ([url, init]) => {
  try {
    const r = await fetch(url, init);
    return {ok: true, status: r.status, body: await r.text(),
            requestId: r.headers.get('x-amzn-requestid'), server: r.headers.get('server'),
            contentType: r.headers.get('content-type')};
  } catch (e) { return {ok: false, error: String(e)}; }
}"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>page</title><p>sidegate CORS test page</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, Any]]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    page_port = free_port()
    pages = ThreadingHTTPServer(("127.0.0.1", page_port), _Page)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    backend = DemoBackend()
    sc = Sidecar(
        tmp_path_factory.mktemp("cors-browser"),
        backend.url,
        {"api.yaml": API, "cors.yaml": CORS.replace("{page}", str(page_port)), "limit.yaml": LIMIT},
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield {
                "browser": browser,
                "page_port": page_port,
                "sidecar": sc,
                "api": f"http://api.sidegate.test:{sc.port}",
            }
        finally:
            browser.close()
            sc.close()
            backend.close()
            pages.shutdown()


def call(
    env: dict[str, Any], origin_host: str, path: str, init: dict[str, Any] | None = None, context: Any = None
) -> dict[str, Any]:
    own = context is None
    context = context or env["browser"].new_context()
    try:
        page = context.new_page()
        page.goto(f"http://{origin_host}:{env['page_port']}/")
        return page.evaluate(FETCH, [env["api"] + path, init or {}])
    finally:
        if own:
            context.close()


def test_simple_get_from_allowed_origin(env):
    r = call(env, "app.sidegate.test", "/books")
    assert r["ok"] and r["status"] == 200 and '"id": "1"' in r["body"]


def test_simple_get_from_disallowed_origin_is_blocked(env):
    r = call(env, "evil.test", "/books")
    assert r == {"ok": False, "error": "TypeError: Failed to fetch"}


def test_preflighted_put_with_allowed_method(env):
    r = call(env, "app.sidegate.test", "/books/1", {"method": "PUT", "body": "x"})
    assert r["ok"] and r["status"] == 200


def test_preflighted_delete_with_disallowed_method_is_blocked(env):
    r = call(env, "app.sidegate.test", "/books/1", {"method": "DELETE"})
    assert not r["ok"]


def test_preflighted_put_from_disallowed_origin_is_blocked(env):
    r = call(env, "evil.test", "/books/1", {"method": "PUT", "body": "x"})
    assert not r["ok"]


def test_allowed_custom_header(env):
    r = call(env, "app.sidegate.test", "/books", {"headers": {"x-api-key": "k"}})
    assert r["ok"] and r["status"] == 200


def test_disallowed_custom_header_is_blocked(env):
    r = call(env, "app.sidegate.test", "/books", {"headers": {"x-other": "v"}})
    assert not r["ok"]


def test_json_post_preflights_content_type(env):
    r = call(
        env,
        "app.sidegate.test",
        "/books",
        {"method": "POST", "headers": {"content-type": "application/json"}, "body": '{"title": "T"}'},
    )
    assert r["ok"] and r["status"] == 201


def test_credentials_with_exact_origin(env):
    r = call(env, "app.sidegate.test", "/books", {"credentials": "include"})
    assert r["ok"] and r["status"] == 200


def test_exposed_header_readable_unexposed_not(env):
    r = call(env, "app.sidegate.test", "/books")
    assert r["ok"] and r["requestId"] and len(r["requestId"]) == 36
    assert r["server"] is None  # the backend sends Server, but it is not exposed
    assert r["contentType"].startswith("application/json")  # CORS-safelisted response header


def test_gateway_403_is_readable_by_the_page(env):
    r = call(env, "app.sidegate.test", "/nope")
    assert r["ok"] and r["status"] == 403 and r["body"] == '{"message":"Missing Authentication Token"}'


def test_gateway_429_is_readable_by_the_page(env):
    r = call(env, "app.sidegate.test", "/limited")
    assert r["ok"] and r["status"] == 429 and r["body"] == '{"message":"Too Many Requests"}'


def test_gateway_504_is_readable_by_the_page(env):
    r = call(env, "app.sidegate.test", "/slow?seconds=3")
    assert r["ok"] and r["status"] == 504 and r["body"] == '{"message":"Endpoint request timed out"}'


def test_two_origins_served_by_one_wildcard_rule(env):
    a = call(env, "a.preview.sidegate.test", "/books", {"credentials": "include"})
    b = call(env, "b.preview.sidegate.test", "/books", {"credentials": "include"})
    assert a["ok"] and b["ok"] and a["status"] == b["status"] == 200


def test_wildcard_does_not_cover_the_bare_domain(env):
    r = call(env, "preview.sidegate.test", "/books")
    assert not r["ok"]


def test_one_preflight_for_two_requests_with_max_age(env):
    sc = env["sidecar"]
    before = sum(1 for x in sc.log_lines() if x["method"] == "OPTIONS" and x["path"] == "/books/2")
    context = env["browser"].new_context()
    try:
        for _ in range(2):
            r = call(env, "app.sidegate.test", "/books/2", {"method": "PUT", "body": "x"}, context=context)
            assert r["ok"] and r["status"] == 200
    finally:
        context.close()
    lines = [x for x in sc.log_lines() if x["path"] == "/books/2"]
    preflights = [x for x in lines if x["method"] == "OPTIONS"][before:]
    assert len(preflights) == 1 and preflights[0]["outcome"] == "answered" and preflights[0]["status"] == 204
    assert len([x for x in lines if x["method"] == "PUT"]) >= 2
