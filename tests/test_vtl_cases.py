"""Mapping-template cases modelled on the examples in API Gateway's documentation.

Each row re-tells a documented example with our own data: the pet store walkthrough, the models and
mapping templates guide (produce, photos, invoice), the ``$input``/``$context``/``$util`` reference,
the request/response override tutorials and the DynamoDB proxy pattern (Scan, Query, GetItem,
PutItem). ``compare`` says how output is checked: ``exact`` text, ``json`` (parsed, so indentation
does not matter) or ``squash`` (runs of whitespace collapsed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from addons.vtl import RenderContext, compile_template


@dataclass(frozen=True)
class Case:
    id: str
    template: str
    expected: Any
    body: str = ""
    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    stage: dict[str, str] = field(default_factory=dict)
    compare: str = "exact"
    status: int | None = None
    request_headers: dict[str, tuple[str, ...]] | None = None


PETS = json.dumps(
    [
        {"id": 7, "type": "parrot", "price": 310.5},
        {"id": 8, "type": "hamster", "price": 15.25},
        {"id": 9, "type": "goldfish", "price": 2.75},
    ]
)

GARDEN = json.dumps(
    {
        "department": "garden",
        "categories": ["shrubs", "bulbs"],
        "bins": [
            {"category": "shrubs", "type": "lavender", "price": 6.5, "unit": "pot", "quantity": 40},
            {"category": "bulbs", "type": "tulips", "price": 0.35, "unit": "bulb", "quantity": 900},
        ],
    }
)

GALLERY = json.dumps(
    {
        "photos": {
            "page": 2,
            "pages": "17",
            "perpage": 2,
            "total": "33",
            "photo": [
                {"id": "p-100", "owner": "ana@x", "title": "Harbour at dawn", "farm": 3, "ispublic": 1},
                {"id": "p-101", "owner": "ben@y", "title": "Old mill", "farm": 5, "ispublic": 0},
            ],
        }
    }
)

INVOICE = json.dumps(
    {
        "DocNumber": "INV-42",
        "Balance": 88.4,
        "Line": [
            {
                "Amount": 60,
                "Detail": {
                    "Customer": {"value": "C9", "name": "Nordic Tiles"},
                    "Account": {"value": "A1", "name": "Stock"},
                },
            },
            {
                "Amount": 28.4,
                "Detail": {
                    "Customer": {"value": "C9", "name": "Nordic Tiles"},
                    "Account": {"value": "A7", "name": "Freight"},
                },
            },
        ],
    }
)

SCAN_RESULT = json.dumps(
    {
        "Count": 2,
        "Items": [
            {"id": {"S": "b1"}, "title": {"S": "Dune"}, "author": {"S": "Frank Herbert"}, "year": {"N": "1965"}},
            {"id": {"S": "b2"}, "title": {"S": "Kindred"}, "author": {"S": "Octavia Butler"}, "year": {"N": "1979"}},
        ],
        "ScannedCount": 2,
    }
)

BOOKS_RESPONSE = """#set($inputRoot = $input.path('$'))
[
#foreach($elem in $inputRoot.Items)
  {"id": "$elem.id.S", "title": "$elem.title.S", "author": "$elem.author.S"}#if($foreach.hasNext),#end
#end
]"""

PARAMS_PASSTHROUGH = """#set($allParams = $input.params())
{
  "params" : {
    #foreach($type in $allParams.keySet())
    #set($params = $allParams.get($type))
    "$type" : {
      #foreach($paramName in $params.keySet())
      "$paramName" : "$util.escapeJavaScript($params.get($paramName))"
      #if($foreach.hasNext),#end
      #end
    }
    #if($foreach.hasNext),#end
    #end
  }
}"""

CONTEXT_TEMPLATE = """{
  "stage" : "$context.stage",
  "request_id" : "$context.requestId",
  "api_id" : "$context.apiId",
  "resource_path" : "$context.resourcePath",
  "http_method" : "$context.httpMethod",
  "source_ip" : "$context.identity.sourceIp",
  "user-agent" : "$context.identity.userAgent",
  "api_key" : "$context.identity.apiKey",
  "caller" : "$context.identity.caller"
}"""

CONTEXT = {
    "stage": "staging",
    "requestId": "req-5f1c",
    "apiId": "a1b2c3",
    "resourcePath": "/books/{id}",
    "httpMethod": "GET",
    "identity": {"sourceIp": "198.51.100.23", "userAgent": "curl/8.5", "apiKey": "k-live-9", "caller": None},
    "authorizer": {"principalId": "user-77", "tier": "gold", "quota": 25, "beta": True, "claims": {"sub": "u-77"}},
}

CASES = [
    # --- pet store walkthrough: three flattenings of the same integration response ---------------
    Case(
        "petstore-listing-sentences",
        """#set($inputRoot = $input.path('$'))
{
  "listings" : [
#foreach($elem in $inputRoot)
    "Item number $elem.id is a $elem.type. The asking price is $elem.price."#if($foreach.hasNext),#end
#end
  ]
}""",
        {
            "listings": [
                "Item number 7 is a parrot. The asking price is 310.5.",
                "Item number 8 is a hamster. The asking price is 15.25.",
                "Item number 9 is a goldfish. The asking price is 2.75.",
            ]
        },
        body=PETS,
        compare="json",
    ),
    Case(
        "petstore-flatten-some",
        """#set($inputRoot = $input.path('$'))
[
#foreach($elem in $inputRoot)
  {
    "description" : "Item $elem.id is a $elem.type.",
    "askingPrice" : $elem.price
  }#if($foreach.hasNext),#end
#end
]""",
        [
            {"description": "Item 7 is a parrot.", "askingPrice": 310.5},
            {"description": "Item 8 is a hamster.", "askingPrice": 15.25},
            {"description": "Item 9 is a goldfish.", "askingPrice": 2.75},
        ],
        body=PETS,
        compare="json",
    ),
    Case(
        "petstore-no-flatten-renamed-fields",
        """#set($inputRoot = $input.path('$'))
[
#foreach($elem in $inputRoot)
  {"number": $elem.id, "class": "$elem.type", "salesPrice": $elem.price}#if($foreach.hasNext),#end
#end
]""",
        [
            {"number": 7, "class": "parrot", "salesPrice": 310.5},
            {"number": 8, "class": "hamster", "salesPrice": 15.25},
            {"number": 9, "class": "goldfish", "salesPrice": 2.75},
        ],
        body=PETS,
        compare="json",
    ),
    # --- models and mapping templates guide --------------------------------------------------------
    Case(
        "produce-choices-from-bins",
        """#set($inputRoot = $input.path('$'))
{
  "choices": [
#foreach($elem in $inputRoot.bins)
    {
      "kind": "$elem.type",
      "suggestedPrice": "$elem.price per $elem.unit",
      "available": $elem.quantity
    }#if($foreach.hasNext),#end

#end
  ]
}""",
        {
            "choices": [
                {"kind": "lavender", "suggestedPrice": "6.5 per pot", "available": 40},
                {"kind": "tulips", "suggestedPrice": "0.35 per bulb", "available": 900},
            ]
        },
        body=GARDEN,
        compare="json",
    ),
    Case(
        "photos-nested-object-and-list",
        """#set($inputRoot = $input.path('$'))
{
  "photos": {
    "page": $inputRoot.photos.page,
    "pages": "$inputRoot.photos.pages",
    "total": "$inputRoot.photos.total",
    "photo": [
#foreach($elem in $inputRoot.photos.photo)
      {"id": "$elem.id", "owner": "$elem.owner", "title": "$elem.title", "farm": $elem.farm, "ispublic": $elem.ispublic}#if($foreach.hasNext),#end
#end
    ]
  }
}""",
        {
            "photos": {
                "page": 2,
                "pages": "17",
                "total": "33",
                "photo": [
                    {"id": "p-100", "owner": "ana@x", "title": "Harbour at dawn", "farm": 3, "ispublic": 1},
                    {"id": "p-101", "owner": "ben@y", "title": "Old mill", "farm": 5, "ispublic": 0},
                ],
            }
        },
        body=GALLERY,
        compare="json",
    ),
    Case(
        "invoice-deep-dotted-paths",
        """#set($inputRoot = $input.path('$'))
{
  "DocNumber": "$inputRoot.DocNumber",
  "Balance": $inputRoot.Balance,
  "Line": [
#foreach($elem in $inputRoot.Line)
    {"Amount": $elem.Amount, "Customer": "$elem.Detail.Customer.name", "Account": "$elem.Detail.Account.value"}#if($foreach.hasNext),#end
#end
  ]
}""",
        {
            "DocNumber": "INV-42",
            "Balance": 88.4,
            "Line": [
                {"Amount": 60, "Customer": "Nordic Tiles", "Account": "A1"},
                {"Amount": 28.4, "Customer": "Nordic Tiles", "Account": "A7"},
            ],
        },
        body=INVOICE,
        compare="json",
    ),
    # --- $input reference examples -----------------------------------------------------------------
    Case(
        "input-id-count-and-json",
        """{
    "id" : "$input.params('id')",
    "count" : "$input.path('$.things').size()",
    "things" : $input.json('$.things')
}""",
        {"id": "xyz", "count": "4", "things": {"a": {}, "b": {}, "c": {}, "d": {}}},
        body='{"things": {"a": {}, "b": {}, "c": {}, "d": {}}}',
        path={"id": "xyz"},
        compare="json",
    ),
    Case(
        "input-query-name-and-whole-body",
        '{\n    "name" : "$input.params(\'name\')",\n    "body" : $input.json(\'$\')\n}',
        {"name": "ravi", "body": {"order": 12, "gift": True}},
        body='{"order": 12, "gift": true}',
        query={"name": "ravi"},
        compare="json",
    ),
    Case(
        "input-json-of-one-key",
        '{\n    "name" : "$input.params(\'name\')",\n    "body" : $input.json(\'$.mykey\')\n}',
        {"name": "ravi", "body": {"nested": [1, 2]}},
        body='{"mykey": {"nested": [1, 2]}, "other": 0}',
        query={"name": "ravi"},
        compare="json",
    ),
    Case(
        "input-json-string-keeps-quotes",
        "\"order\": $input.json('$.order.ref')",
        '"order": "R-88"',
        body='{"order": {"ref": "R-88"}}',
    ),
    Case(
        "input-params-passthrough-all-types",
        PARAMS_PASSTHROUGH,
        {
            "params": {
                "path": {"id": "b1"},
                "querystring": {"expand": "author", "lang": "fr"},
                "header": {"Accept": "application/json", "X-Tenant": "acme"},
            }
        },
        path={"id": "b1"},
        query={"expand": "author", "lang": "fr"},
        header={"Accept": "application/json", "X-Tenant": "acme"},
        compare="json",
    ),
    # --- $context reference example ------------------------------------------------------------------
    Case(
        "context-variables-to-backend-names",
        CONTEXT_TEMPLATE,
        {
            "stage": "staging",
            "request_id": "req-5f1c",
            "api_id": "a1b2c3",
            "resource_path": "/books/{id}",
            "http_method": "GET",
            "source_ip": "198.51.100.23",
            "user-agent": "curl/8.5",
            "api_key": "k-live-9",
            "caller": "",
        },
        context=CONTEXT,
        compare="json",
    ),
    Case(
        "context-authorizer-values-are-stringified",
        "$context.authorizer.principalId|$context.authorizer.tier|$context.authorizer.quota|$context.authorizer.beta",
        "user-77|gold|25|true",
        context=CONTEXT,
    ),
    Case(
        "context-authorizer-claim-property",
        "sub=$context.authorizer.claims.sub",
        "sub=u-77",
        context=CONTEXT,
    ),
    Case(
        "stage-variables-three-syntaxes",
        "$stageVariables.tableName ${stageVariables['tableName']} $stageVariables['region']",
        "books-staging books-staging eu-west-1",
        stage={"tableName": "books-staging", "region": "eu-west-1"},
    ),
    # --- $input.params(x): path, then query string, then header --------------------------------------
    Case(
        "params-path-beats-query-and-header",
        "$input.params('id')",
        "from-path",
        path={"id": "from-path"},
        query={"id": "from-query"},
        header={"id": "from-header"},
    ),
    Case(
        "params-query-beats-header",
        "$input.params('id')",
        "from-query",
        query={"id": "from-query"},
        header={"id": "from-header"},
    ),
    Case("params-header-when-alone", "$input.params('id')", "from-header", header={"id": "from-header"}),
    Case("params-missing-is-empty", "\"$input.params('nope')\"", '""', query={"id": "1"}),
    Case(
        "params-map-of-maps",
        "$input.params().querystring.get('q') $input.params().header.X-Tenant",
        "tea acme",
        query={"q": "tea"},
        header={"X-Tenant": "acme"},
    ),
    Case(
        "params-header-names-are-case-sensitive",
        "[$input.params('x-tenant')]",
        "[]",
        header={"X-Tenant": "acme"},
    ),
    # --- $util.escapeJavaScript --------------------------------------------------------------------
    Case(
        "escape-js-single-quote-quirk",
        "$util.escapeJavaScript($input.path('$.note'))",
        "it\\'s mine",
        body='{"note": "it\'s mine"}',
    ),
    Case(
        "escape-js-documented-fix-for-json",
        '{"note": "$util.escapeJavaScript($input.path(\'$.note\')).replaceAll("\\\\\'","\'")"}',
        {"note": 'it\'s "quoted"'},
        body='{"note": "it\'s \\"quoted\\""}',
        compare="json",
    ),
    Case(
        "escape-js-quotes-and-backslashes",
        "$util.escapeJavaScript($input.path('$.s'))",
        'say \\"hi\\" \\\\ bye',
        body='{"s": "say \\"hi\\" \\\\ bye"}',
    ),
    Case(
        "escape-js-control-characters",
        "$util.escapeJavaScript($input.path('$.s'))",
        "line1\\nline2\\tend",
        body='{"s": "line1\\nline2\\tend"}',
    ),
    Case(
        "escape-js-slash-and-non-ascii",
        "$util.escapeJavaScript($input.path('$.s'))",
        "caf\\u00E9\\/menu",
        body='{"s": "café/menu"}',
    ),
    Case(
        "escape-js-whole-json-into-a-string-field",
        '{"raw": "$util.escapeJavaScript($input.json(\'$\'))"}',
        {"raw": '{"a":[1,2],"b":"x"}'},
        body='{"a": [1, 2], "b": "x"}',
        compare="json",
    ),
    # --- $util.parseJson --------------------------------------------------------------------------
    Case(
        "parse-json-stringified-error-message",
        """#set ($errorMessageObj = $util.parseJson($input.path('$.errorMessage')))
{
   "firstRetryDelay" : $errorMessageObj.retry.delays[0]
}""",
        {"firstRetryDelay": 250},
        body=json.dumps({"errorMessage": json.dumps({"code": "E42", "retry": {"delays": [250, 500]}})}),
        compare="json",
    ),
    Case("parse-json-array-size", "$util.parseJson('[4, 5, 6, 7]').size()", "4"),
    Case(
        "parse-json-field-of-embedded-document",
        "$util.parseJson($input.path('$.payload')).state",
        "shipped",
        body=json.dumps({"payload": json.dumps({"state": "shipped"})}),
    ),
    # --- base64 and URL encoding --------------------------------------------------------------------
    Case("base64-encode", "$util.base64Encode('garden hose')", "Z2FyZGVuIGhvc2U="),
    Case("base64-decode", "$util.base64Decode('Z2FyZGVuIGhvc2U=')", "garden hose"),
    Case(
        "base64-roundtrip-utf8",
        "$util.base64Decode($util.base64Encode($input.path('$.t')))",
        "Grüße",
        body='{"t": "Grüße"}',
    ),
    Case(
        "url-encode-form-style",
        "$util.urlEncode($input.path('$.q'))",
        "a+b%26c%3Dd%2Fe%C3%A9*",
        body='{"q": "a b&c=d/eé*"}',
    ),
    Case("url-decode-form-style", "$util.urlDecode('a+b%26c%3Dd')", "a b&c=d"),
    # --- #foreach with commas -------------------------------------------------------------------------
    Case(
        "foreach-commas-between-items",
        "[#foreach($t in $input.path('$.tags'))\"$t\"#if($foreach.hasNext),#end#end]",
        '["red","green","blue"]',
        body='{"tags": ["red", "green", "blue"]}',
    ),
    Case(
        "foreach-velocity-count",
        "#foreach($t in $input.path('$.tags'))$velocityCount:$t #end",
        "1:red 2:green 3:blue ",
        body='{"tags": ["red", "green", "blue"]}',
    ),
    Case("foreach-over-empty-list", "[#foreach($t in $input.path('$.tags'))\"$t\",#end]", "[]", body='{"tags": []}'),
    Case(
        "foreach-nested-with-commas",
        """{#foreach($shelf in $input.path('$.shelves'))"$shelf.name": [#foreach($b in $shelf.books)"$b"#if($foreach.hasNext),#end#end]#if($foreach.hasNext),#end#end}""",
        {"fiction": ["Dune", "Kindred"], "poetry": ["Ariel"]},
        body='{"shelves": [{"name": "fiction", "books": ["Dune", "Kindred"]}, {"name": "poetry", "books": ["Ariel"]}]}',
        compare="json",
    ),
    # --- DynamoDB as the backend (Scan, Query, GetItem, PutItem) --------------------------------------
    Case("dynamodb-scan-request", '{"TableName": "books"}', {"TableName": "books"}, compare="json"),
    Case(
        "dynamodb-scan-response-to-plain-list",
        BOOKS_RESPONSE,
        [
            {"id": "b1", "title": "Dune", "author": "Frank Herbert"},
            {"id": "b2", "title": "Kindred", "author": "Octavia Butler"},
        ],
        body=SCAN_RESULT,
        compare="json",
    ),
    Case(
        "dynamodb-scan-response-no-items",
        BOOKS_RESPONSE,
        [],
        body='{"Count": 0, "Items": [], "ScannedCount": 0}',
        compare="json",
    ),
    Case(
        "dynamodb-query-request-from-query-string",
        """{
    "TableName": "books",
    "IndexName": "author-index",
    "KeyConditionExpression": "author = :v1",
    "ExpressionAttributeValues": {":v1": {"S": "$input.params('author')"}}
}""",
        {
            "TableName": "books",
            "IndexName": "author-index",
            "KeyConditionExpression": "author = :v1",
            "ExpressionAttributeValues": {":v1": {"S": "Octavia Butler"}},
        },
        query={"author": "Octavia Butler"},
        compare="json",
    ),
    Case(
        "dynamodb-query-response-number-attribute",
        """#set($inputRoot = $input.path('$'))
{"books": [#foreach($elem in $inputRoot.Items){"title": "$elem.title.S", "year": $elem.year.N}#if($foreach.hasNext),#end#end]}""",
        {"books": [{"title": "Dune", "year": 1965}, {"title": "Kindred", "year": 1979}]},
        body=SCAN_RESULT,
        compare="json",
    ),
    Case(
        "dynamodb-getitem-request-from-path",
        '{"TableName": "books", "Key": {"id": {"S": "$input.params(\'id\')"}}}',
        {"TableName": "books", "Key": {"id": {"S": "b2"}}},
        path={"id": "b2"},
        compare="json",
    ),
    Case(
        "dynamodb-putitem-request-from-body-and-context",
        """{
    "TableName": "books",
    "Item": {
        "id": {"S": "$context.requestId"},
        "title": {"S": "$input.path('$.title')"},
        "author": {"S": "$input.path('$.author')"}
    }
}""",
        {
            "TableName": "books",
            "Item": {
                "id": {"S": "req-5f1c"},
                "title": {"S": "Parable of the Sower"},
                "author": {"S": "Octavia Butler"},
            },
        },
        body='{"title": "Parable of the Sower", "author": "Octavia Butler"}',
        context=CONTEXT,
        compare="json",
    ),
    Case(
        "dynamodb-error-to-404-with-override",
        """#set($err = $input.path('$'))
#if($err.get('__type').contains('ResourceNotFoundException'))
#set($context.responseOverride.status = 404)
#end
{"message": "$err.message"}""",
        {"message": "Requested resource not found"},
        body='{"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", "message": "Requested resource not found"}',
        compare="json",
        status=404,
    ),
    # --- override tutorials (pet store) --------------------------------------------------------------
    Case(
        "override-status-when-body-mentions-error",
        """#set($inputRoot = $input.path('$'))
$input.json("$")
#if($inputRoot.toString().contains("error"))
#set($context.responseOverride.status = 400)
#end""",
        {"errors": [{"key": "GetPetRequest.petId", "message": "out of range"}]},
        body='{"errors": [{"key": "GetPetRequest.petId", "message": "out of range"}]}',
        compare="json",
        status=400,
    ),
    Case(
        "override-request-headers-from-two-headers",
        """#set($header1Override = "foo")
#set($header3Value = "$input.params('header1')$input.params('header2')")
$input.json("$")
#set($context.requestOverride.header.header3 = $header3Value)
#set($context.requestOverride.header.header1 = $header1Override)
#set($context.requestOverride.header.multivalueheader=[$header1Override, $header3Value])""",
        {},
        header={"header1": "h1v", "header2": "h2v"},
        compare="json",
        request_headers={"header3": ("h1vh2v",), "header1": ("foo",), "multivalueheader": ("foo", "h1vh2v")},
    ),
    # --- printing rules -------------------------------------------------------------------------------
    Case(
        "print-map-java-style-list-as-json", "$input.path('$')", '{a=1, b=[{"c":5}]}', body='{"a": 1, "b": [{"c": 5}]}'
    ),
    Case("print-json-array-compact", "$input.path('$.b')", '[{"c":5},2]', body='{"a": 1, "b": [{"c": 5}, 2]}'),
    Case(
        "print-booleans",
        "$input.path('$.t') $input.path('$.f') #set($x = true)$x",
        "true false true",
        body='{"t": true, "f": false}',
    ),
    Case(
        "print-missing-as-empty", '"$nothing" "$input.path(\'$.absent\')" "$context.nope.deeper"', '"" "" ""', body="{}"
    ),
    Case("print-empty-payload-as-empty-object", "$input.json('$') $input.path('$') $input.body", "{} {} {}"),
    Case("print-plain-text-payload", "$input.json('$') $input.path('$')", '"a=b&c=d" a=b&c=d', body="a=b&c=d"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_documented_template(case: Case) -> None:
    template = compile_template(case.template, source=f"cases:{case.id}")
    result = template.render(
        RenderContext(
            body=case.body,
            path_params=case.path,
            query_params=case.query,
            header_params=case.header,
            context=case.context,
            stage_variables=case.stage,
        )
    )
    if case.compare == "json":
        assert json.loads(result.text) == case.expected, result.text
    elif case.compare == "squash":
        assert " ".join(result.text.split()) == " ".join(case.expected.split())
    else:
        assert result.text == case.expected
    assert result.response_override.status == case.status
    if case.request_headers is not None:
        assert dict(result.request_override.header) == case.request_headers


def test_case_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
