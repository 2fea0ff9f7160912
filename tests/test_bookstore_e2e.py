"""The bookstore end to end: sidegate in front of a real DynamoDB-protocol server (moto), SigV4 on.

GET /books becomes a signed POST Scan and DynamoDB's typed items become a plain JSON list;
GET /books/{id} is a GetItem; POST /books a validated PutItem; DynamoDB's errors become clean
gateway answers. moto's server picks the AWS service from the SigV4 credential scope, so an
unsigned or wrongly signed request would not reach its DynamoDB at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import ROOT, free_port
from procs import PYTHON, Sidecar, request, stop, wait_port

pytestmark = pytest.mark.e2e

CREDS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLEBOOKSTORE", "AWS_SECRET_ACCESS_KEY": "bookstore-secret-PLANTED-31"}
BOOKS = [
    {"id": "1", "title": "Dune", "author": "Frank Herbert"},
    {"id": "2", "title": "Solaris", "author": "Stanislaw Lem"},
]


@pytest.fixture(scope="module")
def dynamodb():
    pytest.importorskip("moto")
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc, timeout=60)
    client = boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    client.create_table(
        TableName="books",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for book in BOOKS:
        client.put_item(TableName="books", Item={k: {"S": v} for k, v in book.items()})
    yield port
    stop(proc)


def bookstore(tmp_path, port, table="books"):
    policies = tmp_path / "bookstore-policies"
    shutil.copytree(ROOT / "docs" / "examples" / "bookstore" / "policies", policies)
    text = (policies / "api.yaml").read_text()
    text = text.replace("dynamodb_endpoint: 127.0.0.1:8000", f"dynamodb_endpoint: 127.0.0.1:{port}")
    (policies / "api.yaml").write_text(text.replace("table: books", f"table: {table}"))
    return {p.name: p.read_text() for p in policies.glob("*.yaml")}


def test_bookstore_routes_end_to_end(tmp_path, dynamodb):
    sc = Sidecar(
        tmp_path,
        "http://127.0.0.1:9",
        bookstore(tmp_path, dynamodb),
        extra_env=CREDS,
        sets=["--set", f"save_stream_file={tmp_path / 'flows.mitm'}"],
    )
    try:
        listing = sc.get("/books")
        assert listing.status == 200 and listing.headers["content-type"] == "application/json"
        assert sorted(listing.json(), key=lambda b: b["id"]) == BOOKS
        one = sc.get("/books/2")
        assert (one.status, one.json()) == (200, BOOKS[1])
        missing = sc.get("/books/404")
        assert (missing.status, missing.json()) == (404, {"message": "No such book"})
        new = {"id": "3", "title": "Kindred", "author": "Octavia E. Butler"}
        created = sc.get(
            "/books", method="POST", body=json.dumps(new).encode(), headers={"content-type": "application/json"}
        )
        assert (created.status, created.json(), created.headers["location"]) == (201, {"created": True}, "/books")
        assert sc.get("/books/3").json() == new
        invalid = sc.get("/books", method="POST", body=b'{"id": "4"}', headers={"content-type": "application/json"})
        assert (invalid.status, invalid.json()) == (400, {"message": "Invalid request body"})
        assert sc.get("/books/4").status == 404  # nothing was written
    finally:
        sc.close()
    recorded = sc.stdout_path.read_text() + sc.stderr() + (tmp_path / "flows.mitm").read_bytes().decode("latin-1")
    assert CREDS["AWS_SECRET_ACCESS_KEY"] not in recorded


def test_dynamodb_errors_become_clean_gateway_answers(tmp_path, dynamodb):
    sc = Sidecar(tmp_path, "http://127.0.0.1:9", bookstore(tmp_path, dynamodb, table="no-such-table"), extra_env=CREDS)
    try:
        r = sc.get("/books")
        assert (r.status, r.json()) == (503, {"message": "The bookstore is not available"})
        assert "__type" not in r.body.decode() and "no-such-table" not in r.body.decode()
    finally:
        sc.close()


def test_unsigned_requests_do_not_reach_dynamodb(dynamodb):
    r = request(
        f"http://127.0.0.1:{dynamodb}/",
        method="POST",
        body=b'{"TableName": "books"}',
        headers={"x-amz-target": "DynamoDB_20120810.Scan", "content-type": "application/x-amz-json-1.0"},
    )
    assert r.status != 200 or b"Items" not in r.body  # why the signing matters (see the module docstring)
