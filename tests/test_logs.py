"""The access log's last line of defence: loaded secrets never reach a written line."""

from __future__ import annotations

import json

from addons.logs import AccessLog


def test_secrets_are_redacted_wherever_they_appear_in_a_line(tmp_path):
    target = tmp_path / "access.log"
    secret = 'pl4nted"sec\\ret-é'  # needs JSON escaping: quote, backslash, non-ASCII
    log = AccessLog()
    log.open(str(target))
    log.set_secrets((secret, "other-secret", ""))
    log.write(path=f"/items?token={secret}", nested={"deep": [f"x{secret}y", "other-secret"]}, status=200)
    log.write(path="/clean", status=200)
    log.close()
    first, second = target.read_text(encoding="utf-8").splitlines()
    assert secret not in first and json.dumps(secret)[1:-1] not in first
    assert "other-secret" not in first
    record = json.loads(first)
    assert record["path"] == "/items?token=[redacted]"
    assert record["nested"] == {"deep": ["x[redacted]y", "[redacted]"]}
    assert json.loads(second)["path"] == "/clean"


def test_without_secrets_lines_are_untouched(tmp_path):
    target = tmp_path / "access.log"
    log = AccessLog()
    log.open(str(target))
    log.write(path="/a", status=204)
    log.close()
    record = json.loads(target.read_text(encoding="utf-8"))
    assert record["path"] == "/a" and record["status"] == 204 and record["event"] == "request"
