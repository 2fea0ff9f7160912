"""The checkpoints and their runner, driven with mitmproxy's taddons/tflow against a real backend."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import access_lines, drive
from mitmproxy.test import tflow, tutils

API = """
    kind: Api
    stage: test
    routes:
      GET /books: {}
      GET /books/{id}: {}
"""
DENY = """
    kind: Plugin
    use: sample_plugins:DenyHeader
    config: {header: x-deny}
"""


def flow(path="/books", method="GET", headers=()):
    return tflow.tflow(
        req=tutils.treq(method=method.encode(), path=path.encode(), headers=((b"host", b"example.com"), *headers))
    )


async def test_routed_request_reaches_the_backend(make_gateway, backend, tmp_path):
    _, gate = make_gateway({"api.yaml": API}, upstream=backend.url)
    f = await drive(gate, flow("/books/42?x=1"))
    assert f.response is not None and f.response.status_code == 200
    assert json.loads(f.response.content) == {"method": "GET", "path": "/books/42?x=1"}
    assert f.response.headers["x-amzn-RequestId"] == f.metadata["sidegate"]["request_id"]
    meta = f.metadata["sidegate"]
    assert meta["route"] == "GET /books/{id}" and meta["outcome"] == "allowed" and meta["status"] == 200
    assert [(e["checkpoint"], e["plugin"], e["outcome"]) for e in meta["trace"]] == [
        ("method_request", "router", "continue"),
        ("integration_request", "integration", "continue"),
    ]
    assert f.comment == "sidegate: GET /books/{id} -> 200"
    assert not f.marked
    [line] = access_lines(tmp_path)
    assert line["route"] == "GET /books/{id}" and line["path"] == "/books/42" and line["status"] == 200
    assert set(line["checkpoint_us"]) == {
        "method_request",
        "integration_request",
        "integration_response",
        "method_response",
    }


async def test_no_route_is_missing_authentication_token_and_skips_the_backend(make_gateway, backend):
    _, gate = make_gateway({"api.yaml": API}, upstream=backend.url)
    f = await drive(gate, flow("/authors"))
    assert f.response.status_code == 403
    assert json.loads(f.response.content) == {"message": "Missing Authentication Token"}
    assert f.response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert backend.seen == []
    assert f.marked == ":no_entry:"
    assert f.comment.startswith("sidegate: 403 MISSING_AUTHENTICATION_TOKEN by router (no_route)")
    entry = f.metadata["sidegate"]["trace"][0]
    assert entry["outcome"] == "reject" and entry["reason"] == "no_route"
    assert entry["source"].startswith("policies/api.yaml:")


async def test_plugin_from_policy_by_module_and_class_rejects(make_gateway, backend, tmp_path):
    _, gate = make_gateway({"api.yaml": API, "deny.yaml": DENY}, upstream=backend.url)
    f = await drive(gate, flow(headers=((b"x-deny", b"1"),)))
    assert f.response.status_code == 403
    assert f.response.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    assert backend.seen == []
    reject = f.metadata["sidegate"]["trace"][-1]
    assert reject == {
        "checkpoint": "method_request",
        "plugin": "deny_header",
        "outcome": "reject",
        "reason": "denied_header",
        "rule": "test/deny-header",
        "response_type": "ACCESS_DENIED",
        "status": None,
        "source": "policies/deny.yaml:1",
        "enforced": True,
        "us": reject["us"],
    }
    assert isinstance(reject["us"], int)
    [line] = access_lines(tmp_path)
    assert (line["outcome"], line["plugin"], line["reason"]) == ("rejected", "deny_header", "denied_header")
    ok = await drive(gate, flow())
    assert ok.response.status_code == 200


@pytest.mark.parametrize("how", ["global", "document"])
async def test_report_only_records_and_lets_the_request_pass(make_gateway, backend, tmp_path, how):
    files = {"api.yaml": API, "deny.yaml": DENY + ("    mode: report\n" if how == "document" else "")}
    _, gate = make_gateway(files, upstream=backend.url, **({"sidegate_mode": "report"} if how == "global" else {}))
    f = await drive(gate, flow(headers=((b"x-deny", b"1"),)))
    assert f.response.status_code == 200
    assert len(backend.seen) == 1
    meta = f.metadata["sidegate"]
    assert meta["outcome"] == "allowed"
    assert meta["report_only"] == [{"plugin": "deny_header", "reason": "denied_header", "rule": "test/deny-header"}]
    entry = next(e for e in meta["trace"] if e["plugin"] == "deny_header")
    assert entry["outcome"] == "reject" and entry["enforced"] is False
    assert f.marked == ":warning:"
    assert "report-only, would reject: deny_header (denied_header)" in f.comment
    metrics = gate.metrics.render().decode()
    assert 'sidegate_rejections_total{enforced="false",plugin="deny_header",reason="denied_header"} 1.0' in metrics
    [line] = access_lines(tmp_path)
    assert line["report_only"] == [{"plugin": "deny_header", "reason": "denied_header", "rule": "test/deny-header"}]


async def test_plugin_exception_fails_closed_with_500(make_gateway, backend, caplog):
    _, gate = make_gateway(
        {"api.yaml": API, "boom.yaml": "kind: Plugin\nuse: sample_plugins:Boom\n"}, upstream=backend.url
    )
    with caplog.at_level(logging.ERROR, logger="sidegate"):
        f = await drive(gate, flow(headers=((b"x-boom", b"1"),)))
    assert f.response.status_code == 500
    assert json.loads(f.response.content) == {"message": "Internal server error"}
    assert backend.seen == []
    entry = f.metadata["sidegate"]["trace"][-1]
    assert (entry["plugin"], entry["outcome"], entry["reason"]) == ("boom", "error", "internal_error")
    assert any("plugin boom failed at method_request" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_plugin_exception_in_report_mode_or_fail_open_lets_request_pass(make_gateway, backend):
    _, gate = make_gateway(
        {"api.yaml": API, "boom.yaml": "kind: Plugin\nuse: sample_plugins:Boom\nconfig: {fail_open: true}\n"},
        upstream=backend.url,
    )
    f = await drive(gate, flow(headers=((b"x-boom", b"1"),)))
    assert f.response.status_code == 200
    assert f.metadata["sidegate"]["trace"][1]["outcome"] == "error"


async def test_checkpoints_skip_a_flow_already_answered(make_gateway, backend):
    _, gate = make_gateway(
        {"api.yaml": API, "deny.yaml": DENY, "stamp.yaml": "kind: Plugin\nuse: sample_plugins:Stamp\n"},
        upstream=backend.url,
    )
    f = flow()
    f.response = tutils.tresp(status_code=204)  # answered before sidegate saw it (another addon)
    await drive(gate, f)
    assert f.response.status_code == 204
    assert backend.seen == []
    request_side = [
        e for e in f.metadata["sidegate"]["trace"] if e["checkpoint"] in ("method_request", "integration_request")
    ]
    assert request_side == []  # nothing ran on the request side
    # the rejected flow is not re-decided, and integration response skips gateway answers
    g = await drive(gate, flow(headers=((b"x-deny", b"1"),)))
    assert "x-integration-response" not in g.response.headers
    assert g.response.headers["x-method-response"] == "403"  # method response decorates every answer


async def test_async_plugin_at_every_later_checkpoint(make_gateway, backend):
    _, gate = make_gateway(
        {"api.yaml": API, "stamp.yaml": "kind: Plugin\nuse: sample_plugins:Stamp\n"}, upstream=backend.url
    )
    f = await drive(gate, flow())
    assert backend.seen[0]["headers"]["x-stamped"] == "integration_request"
    assert f.response.headers["x-integration-response"] == "seen"
    assert f.response.headers["x-method-response"] == "200"


async def test_unloadable_plugin_is_a_policy_error(make_gateway):
    from mitmproxy import exceptions

    with pytest.raises(exceptions.OptionsError) as e:
        make_gateway({"p.yaml": "kind: Plugin\nuse: sample_plugins:NotAPlugin\n"})
    assert "policies/p.yaml:2:6: use: plugin 'sample_plugins:NotAPlugin' implements none of" in str(e.value)
    with pytest.raises(exceptions.OptionsError, match=r"p.yaml:2:6: use: cannot import plugin module 'no_such_mod'"):
        make_gateway({"p.yaml": "kind: Plugin\nuse: no_such_mod:X\n"})
    with pytest.raises(exceptions.OptionsError, match=r"no plugin named 'ghost' in entry point group sidegate.plugins"):
        make_gateway({"p.yaml": "kind: Plugin\nuse: ghost\n"})


async def test_trace_is_plain_data_and_survives_a_saved_flow(make_gateway, backend, tmp_path):
    from mitmproxy import io

    _, gate = make_gateway({"api.yaml": API, "deny.yaml": DENY}, upstream=backend.url)
    f = await drive(gate, flow(headers=((b"x-deny", b"1"),)))
    path = tmp_path / "flows"
    with open(path, "wb") as fh:
        io.FlowWriter(fh).add(f)
    with open(path, "rb") as fh:
        [loaded] = list(io.FlowReader(fh).stream())
    assert loaded.metadata["sidegate"] == f.metadata["sidegate"]
    assert loaded.comment == f.comment and loaded.marked == ":no_entry:"


async def test_in_flight_flow_keeps_its_policy_set_across_reload(make_gateway, backend, tmp_path):
    _, gate = make_gateway({"api.yaml": API}, upstream=backend.url)
    f = flow("/authors")
    first = gate.policy
    (tmp_path / "policies" / "api.yaml").write_text("kind: Api\nroutes:\n  GET /authors: {}\n")
    ex = gate.exchange(f)
    assert gate.reload() is True
    assert gate.policy is not first and ex is not None and ex.policy is first
    await drive(gate, f)
    assert f.response.status_code == 403  # decided by the set it started with
    g = await drive(gate, flow("/authors"))
    assert g.response.status_code == 200


async def test_invalid_reload_keeps_the_last_good_set(make_gateway, backend, tmp_path, caplog):
    _, gate = make_gateway({"api.yaml": API}, upstream=backend.url)
    good = gate.policy
    (tmp_path / "policies" / "api.yaml").write_text("kind: Api\nroutes:\n  GET /x: {integration: {timeout: never}}\n")
    with caplog.at_level(logging.ERROR, logger="sidegate"):
        assert gate.reload() is False
    assert gate.policy is good
    messages = [r.getMessage() for r in caplog.records]
    assert any("policies/api.yaml:3:35: routes['GET /x'].integration.timeout" in m for m in messages), messages
    assert 'sidegate_policy_reloads_total{result="failed"} 1.0' in gate.metrics.render().decode()
    f = await drive(gate, flow("/books"))
    assert f.response.status_code == 200


async def test_replayed_flow_is_decided_again_with_the_current_policy(make_gateway, backend, tmp_path):
    _, gate = make_gateway({"api.yaml": API}, upstream=backend.url)
    f = await drive(gate, flow("/authors"))
    assert f.response.status_code == 403
    first_id = f.metadata["sidegate"]["request_id"]
    (tmp_path / "policies" / "api.yaml").write_text("kind: Api\nroutes:\n  GET /authors: {}\n")
    assert gate.reload()
    f.response = None  # what mitmproxy's replay.client does before sending the flow again
    await drive(gate, f)
    assert f.response.status_code == 200
    meta = f.metadata["sidegate"]
    assert meta["request_id"] != first_id and meta["outcome"] == "allowed" and meta["route"] == "GET /authors"
    assert f.comment == "sidegate: GET /authors -> 200"
    assert f.marked == ""


async def test_plugin_runs_only_for_the_methods_it_names(make_gateway, backend):
    api = API.replace("GET /books/{id}: {}", "ANY /books/{id}: {}")
    _, gate = make_gateway(
        {"api.yaml": api, "only.yaml": "kind: Plugin\nuse: sample_plugins:DeleteOnly\n"}, upstream=backend.url
    )
    skipped = await drive(gate, flow("/books/1", method="GET"))
    assert skipped.response.status_code == 200
    assert "delete_only" not in {e["plugin"] for e in skipped.metadata["sidegate"]["trace"]}
    refused = await drive(gate, flow("/books/1", method="DELETE"))
    assert refused.response.status_code == 403
    assert refused.metadata["sidegate"]["rejected_by"] == "delete_only"


def test_an_empty_method_list_leaves_the_checkpoint_out():
    from addons.plugins import slots_for

    class Hooks:
        name = "hooks"
        method_response_only_for: tuple[str, ...] = ()

        def method_request(self, ex):
            return None

        def method_response(self, ex):
            return None

    assert set(slots_for(Hooks(), enforced=True, source="x.yaml:1")) == {"method_request"}
    Hooks.method_response_only_for = ("GET",)
    assert set(slots_for(Hooks(), enforced=True, source="x.yaml:1")) == {"method_request", "method_response"}
