"""Policy framework: loading, one-line errors with file:line:column, validate, schema, secrets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import ROOT, write_policies
from pydantic import Field, ValidationError

from addons.cli import schema
from addons.policy import models
from addons.policy.errors import PolicyError
from addons.policy.models import ApiPolicy, GatewayResponsesPolicy
from addons.policy.policyset import load_policy_set
from addons.policy.types import Duration, Mode, PolicyModel, Regex, Secret, Size


def errors_of(tmp_path: Path, files: dict[str, str]) -> list[str]:
    write_policies(tmp_path / "policies", files)
    with pytest.raises(PolicyError) as exc:
        load_policy_set(tmp_path / "policies")
    return str(exc.value).splitlines()


def test_valid_directory_gives_one_immutable_policy_set(tmp_path):
    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": """
            kind: Api
            stage: prod
            stage_variables: {table: books}
            upstream: http://127.0.0.1:8081
            timeout: 5s
            routes:
              GET /books: {}
              GET /books/{id}: {integration: {timeout: 300ms}}
        """,
            "responses.yaml": """
            kind: GatewayResponses
            responses:
              THROTTLED: {status: 429, body: '{"m": "slow down"}'}
        """,
        },
    )
    ps = load_policy_set(tmp_path / "policies")
    assert isinstance(ps.api, ApiPolicy)
    assert ps.api.stage == "prod" and ps.api.timeout == 5.0
    assert ps.api.routes["GET /books/{id}"].integration.timeout == pytest.approx(0.3)
    assert ps.api_source == "policies/api.yaml:1"
    with pytest.raises(ValidationError):  # frozen models
        ps.api.stage = "x"  # type: ignore[misc]
    assert [type(d.model) for d in ps.documents] == [ApiPolicy, GatewayResponsesPolicy]


def test_unknown_key_names_file_line_column(tmp_path):
    lines = errors_of(
        tmp_path,
        {
            "api.yaml": """
        kind: Api
        stage: prod
        routes:
          GET /books:
            integraton: {}
    """
        },
    )
    assert lines == ["policies/api.yaml:5:5: routes['GET /books'].integraton: unknown key"]


def test_wrong_type(tmp_path):
    lines = errors_of(tmp_path, {"api.yaml": "kind: Api\nstage_variables: [a, b]\n"})
    assert lines == ["policies/api.yaml:2:1: stage_variables: expected a mapping (got a list)"]


def test_missing_required_field(tmp_path):
    lines = errors_of(tmp_path, {"gr.yaml": "kind: GatewayResponses\n"})
    assert lines == ["policies/gr.yaml:1:1: responses: missing required key"]


def test_bad_url_and_bad_duration(tmp_path):
    lines = errors_of(
        tmp_path,
        {
            "api.yaml": """
        kind: Api
        upstream: ftp://files.example.com
        timeout: soon
    """
        },
    )
    assert lines == [
        "policies/api.yaml:2:11: upstream: expected an http(s) URL such as http://127.0.0.1:8081 "
        "(got 'ftp://files.example.com')",
        "policies/api.yaml:3:10: timeout: expected a duration such as 300ms, 29s or 5m (got 'soon')",
    ]


def test_out_of_range_value(tmp_path):
    lines = errors_of(tmp_path, {"api.yaml": "kind: Api\ntimeout: 10m\n"})
    assert lines == ["policies/api.yaml:2:10: timeout: must be less than or equal to 300 (got '10m')"]


class _RegexKind(PolicyModel):
    """A kind with a regex field, as later concerns (CORS, WAF) declare them."""

    kind: str
    mode: Mode | None = None
    patterns: list[Regex] = Field(default_factory=list)
    limit: Size = 0
    every: Duration = 1.0


@pytest.fixture
def regex_kind(monkeypatch):
    monkeypatch.setitem(models.KINDS, "RegexTest", _RegexKind)


def test_bad_regex_is_reported_with_position(tmp_path, regex_kind):
    lines = errors_of(tmp_path, {"r.yaml": "kind: RegexTest\npatterns:\n  - 'ok.*'\n  - '[a-'\n"})
    assert len(lines) == 1
    assert re.fullmatch(r"policies/r\.yaml:4:5: patterns\[1\]: invalid regular expression \(.+\)", lines[0])


def test_regex_size_and_duration_fields_compile_once(tmp_path, regex_kind):
    write_policies(tmp_path / "policies", {"r.yaml": "kind: RegexTest\npatterns: ['^a+$']\nlimit: 16KB\nevery: 5m\n"})
    doc = load_policy_set(tmp_path / "policies").documents[0].model
    assert isinstance(doc, _RegexKind)
    assert doc.patterns[0].fullmatch("aaa") and doc.limit == 16000 and doc.every == 300.0


def test_duplicate_route_key_in_yaml(tmp_path):
    lines = errors_of(
        tmp_path,
        {
            "api.yaml": """
        kind: Api
        routes:
          GET /books: {}
          GET /books: {}
    """
        },
    )
    assert lines == ["policies/api.yaml:4:3: YAML syntax error: duplicate key 'GET /books'"]


def test_routes_with_the_same_shape_are_duplicates(tmp_path):
    lines = errors_of(
        tmp_path,
        {
            "api.yaml": """
        kind: Api
        routes:
          GET /books/{id}: {}
          GET /books/{bookId}/: {}
    """
        },
    )
    assert lines == [
        "policies/api.yaml:2:1: routes: duplicate route: 'GET /books/{bookId}/' matches the same requests as "
        "'GET /books/{id}'"
    ]


def test_invalid_route_key_points_at_the_key(tmp_path):
    lines = errors_of(tmp_path, {"api.yaml": "kind: Api\nroutes:\n  FETCH /books: {}\n  GET /a/{p+}/b: {}\n"})
    assert lines[0].startswith("policies/api.yaml:3:3: routes['FETCH /books']: route key must be 'METHOD /path'")
    assert lines[1] == (
        "policies/api.yaml:4:3: routes['GET /a/{p+}/b']: greedy parameter {p+} must be the last segment "
        "of 'GET /a/{p+}/b'"
    )


def test_unknown_kind(tmp_path):
    lines = errors_of(tmp_path, {"x.yaml": "# comment\nkind: Firewall\n"})
    assert lines == [f"policies/x.yaml:2:1: kind: unknown kind 'Firewall'; expected one of: {', '.join(models.KINDS)}"]


def test_yaml_syntax_error(tmp_path):
    lines = errors_of(tmp_path, {"api.yaml": "kind: Api\nroutes: {GET /a: {}\n"})
    assert len(lines) == 1 and lines[0].startswith("policies/api.yaml:3:1: YAML syntax error:")


def test_two_documents_in_one_file(tmp_path):
    lines = errors_of(tmp_path, {"api.yaml": "kind: Api\n---\nkind: GatewayResponses\nresponses: {}\n"})
    assert lines == ["policies/api.yaml:3:1: found 2 YAML documents; put one document per file"]


def test_every_error_in_every_file_is_reported_and_nothing_applies(tmp_path):
    lines = errors_of(
        tmp_path,
        {
            "a.yaml": "kind: Api\nstage: 'no spaces allowed'\nbogus: 1\n",
            "b.yaml": "kind: GatewayResponses\nresponses:\n  NOT_A_TYPE: {}\n  THROTTLED: {status: 700}\n",
            "c.yaml": "kind: Api\n",
        },
    )
    assert (
        lines[0] == "policies/a.yaml:2:8: stage: stage names are letters, digits, - and _, up to 128 characters "
        "(got 'no spaces allowed')"
    )
    assert lines[1] == "policies/a.yaml:3:1: bogus: unknown key"
    assert lines[2].startswith("policies/b.yaml:3:3: responses.NOT_A_TYPE: unknown gateway response type")
    assert lines[3] == "policies/b.yaml:4:23: responses.THROTTLED.status: must be less than or equal to 599 (got 700)"
    assert len(lines) == 4


def test_second_api_document_is_an_error(tmp_path):
    lines = errors_of(tmp_path, {"a.yaml": "kind: Api\n", "b.yaml": "# second\nkind: Api\n"})
    assert lines == ["policies/b.yaml:2:1: kind: a second Api document (the first is policies/a.yaml:1)"]


def test_empty_directory_gives_the_default_api(tmp_path):
    (tmp_path / "policies").mkdir()
    ps = load_policy_set(tmp_path / "policies")
    assert list(ps.api.routes) == ["$default"]


def test_missing_directory(tmp_path):
    with pytest.raises(PolicyError, match="policy directory does not exist"):
        load_policy_set(tmp_path / "nope")


# -- secrets ---------------------------------------------------------------------------------

PLANTED = "s3cr3t-PLANTED-value-7781"


def test_secret_references_resolve_and_never_print(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKEND_TOKEN", PLANTED)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "token.txt").write_text(PLANTED + "-file\n")
    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": """
        kind: Api
        routes:
          GET /a:
            integration:
              request_headers:
                authorization: {secret_env: BACKEND_TOKEN}
                x-file: {secret_file: certs/token.txt}
                x-plain: hello
    """
        },
    )
    ps = load_policy_set(tmp_path / "policies")
    headers = ps.api.routes["GET /a"].integration.request_headers
    assert isinstance(headers["authorization"], Secret) and headers["authorization"].reveal() == PLANTED
    assert headers["x-file"].reveal() == PLANTED + "-file"  # type: ignore[union-attr]
    assert headers["x-plain"] == "hello"
    assert PLANTED not in repr(ps) and PLANTED not in str(ps.api) and PLANTED not in ps.summary()
    assert {s.reveal() for s in ps.secrets} == {PLANTED, PLANTED + "-file"}


def test_literal_secret_is_refused_and_missing_env_named_without_value(tmp_path, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    lines = errors_of(
        tmp_path,
        {
            "api.yaml": """
        kind: Api
        routes:
          GET /a:
            integration:
              request_headers:
                authorization: {secret_env: NOT_SET_ANYWHERE}
                x-key: {secret_env: A, secret_file: b}
    """
        },
    )
    assert lines == [
        "policies/api.yaml:6:9: routes['GET /a'].integration.request_headers.authorization: "
        "environment variable NOT_SET_ANYWHERE is not set",
        "policies/api.yaml:7:9: routes['GET /a'].integration.request_headers['x-key']: "
        "give exactly one of secret_env, secret_file",
    ]


def test_validate_never_prints_a_secret(tmp_path):
    write_policies(
        tmp_path / "policies",
        {
            "api.yaml": """
            kind: Api
            timeout: nope
            routes:
              GET /a:
                integration:
                  request_headers: {authorization: {secret_env: PLANTED_SECRET}}
        """,
        },
    )
    env = {"PLANTED_SECRET": PLANTED, "PATH": "/usr/bin:/bin"}
    bad = subprocess.run(
        [sys.executable, "-m", "addons.cli", "validate", "policies"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 1
    assert "policies/api.yaml:2:10: timeout:" in bad.stdout
    assert PLANTED not in bad.stdout + bad.stderr
    (tmp_path / "policies" / "api.yaml").write_text(
        (tmp_path / "policies" / "api.yaml").read_text().replace("timeout: nope", "timeout: 3s")
    )
    good = subprocess.run(
        [sys.executable, "-m", "addons.cli", "validate", "policies"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("policies: valid (1 documents, 1 routes")
    assert PLANTED not in good.stdout + good.stderr


# -- validate and schema over the shipped policies ----------------------------------------------


def test_shipped_policies_validate():
    result = subprocess.run(
        [sys.executable, "-m", "addons.cli", "validate", "policies"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_schema_command_prints_json_schema_of_every_kind():
    result = subprocess.run([sys.executable, "-m", "addons.cli", "schema"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert doc["$schema"].endswith("2020-12/schema")
    assert set(doc["discriminator"]["mapping"]) == set(models.KINDS)
    assert {"Api", "GatewayResponses", "Plugin", "Cors", "OriginVerify", "Throttle"} <= set(models.KINDS)


@pytest.mark.parametrize(
    "path",
    sorted([*(ROOT / "policies").glob("*.yaml"), *(ROOT / "docs" / "examples").rglob("*.yaml")]),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_shipped_policy_file_matches_the_schema(path):
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(path.read_text())
    jsonschema.validate(data, schema())


def test_schema_rejects_what_the_loader_rejects():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "Api", "bogus": 1}, schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "Nope"}, schema())
