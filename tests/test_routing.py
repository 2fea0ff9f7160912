"""Route keys and API Gateway's precedence: literal > {param} > {proxy+}; method > ANY; $default last."""

from __future__ import annotations

import pytest

from addons.routing import LITERAL, PARAM, Router, parse_route_key

ROUTES = [
    "GET /books",
    "GET /books/{id}",
    "GET /books/new",
    "ANY /books/{id}",
    "POST /books",
    "GET /files/{proxy+}",
    "ANY /{proxy+}",
    "GET /",
    "DELETE /books/{id}/reviews/{reviewId}",
    "$default",
]


@pytest.mark.parametrize(
    ("method", "path", "route", "params"),
    [
        ("GET", "/books", "GET /books", {}),
        ("GET", "/books/", "GET /books", {}),  # trailing slash ignored
        ("GET", "/books/new", "GET /books/new", {}),  # literal beats {id}
        ("GET", "/books/42", "GET /books/{id}", {"id": "42"}),  # explicit method beats ANY
        ("PUT", "/books/42", "ANY /books/{id}", {"id": "42"}),
        ("GET", "/books/a%20b", "GET /books/{id}", {"id": "a b"}),  # parameters are URL-decoded
        ("DELETE", "/books/7/reviews/9", "DELETE /books/{id}/reviews/{reviewId}", {"id": "7", "reviewId": "9"}),
        ("GET", "/files/a/b/c.txt", "GET /files/{proxy+}", {"proxy": "a/b/c.txt"}),
        ("POST", "/files/a", "ANY /{proxy+}", {"proxy": "files/a"}),  # GET-only greedy route skipped
        ("POST", "/books", "POST /books", {}),
        ("PATCH", "/books", "ANY /{proxy+}", {"proxy": "books"}),
        ("GET", "/", "GET /", {}),
        ("POST", "/", "$default", {}),  # {proxy+} needs at least one segment
    ],
)
def test_most_specific_route_wins(method, path, route, params):
    router = Router([parse_route_key(k) for k in ROUTES])
    m = router.match(method, path)
    assert m is not None
    assert (m.key, dict(m.params)) == (route, params)


def test_no_match_without_default():
    router = Router([parse_route_key("GET /books"), parse_route_key("POST /books/{id}")])
    assert router.match("GET", "/authors") is None
    assert router.match("DELETE", "/books") is None  # wrong method is no route, as in API Gateway
    assert router.match("POST", "/books/1/extra") is None


def test_resource_path_keeps_the_template():
    m = Router([parse_route_key("GET /books/{id}")]).match("GET", "/books/9")
    assert m is not None and m.resource_path == "/books/{id}"


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("GET books", "must start with /"),
        ("FETCH /x", "METHOD one of"),
        ("GET /a/{x}/{x}", "appears twice"),
        ("GET /a/{p+}/b", "must be the last segment"),
        ("GET /a/{bad", "invalid path segment"),
        ("GET", "route key must be"),
        ("$other", "route key must be"),
    ],
)
def test_invalid_route_keys(key, error):
    with pytest.raises(ValueError, match=error):
        parse_route_key(key)


def test_same_shape_detection():
    assert parse_route_key("GET /a/{x}").shape == parse_route_key("GET /a/{y}/").shape
    assert parse_route_key("GET /a/{x}").shape != parse_route_key("ANY /a/{x}").shape
    assert parse_route_key("GET /a/{x}").shape != parse_route_key("GET /a/{x+}").shape


def _scan(keys, method, path):
    """The reference: each route's own pattern, tried one by one in precedence order."""
    import re
    from urllib.parse import unquote

    ordered = sorted(enumerate(keys), key=lambda ik: ik[1].precedence, reverse=True)
    for _, key in ordered:
        if key.is_default or (key.method != method and key.method != "ANY"):
            continue
        regex = "".join(
            "/" + re.escape(v) if k == LITERAL else ("/([^/]+)" if k == PARAM else "/(.+)") for k, v in key.segments
        )
        m = re.fullmatch(regex + "/?", path)
        if m is not None:
            names = [v for k, v in key.segments if k != LITERAL]
            return key.text, tuple((n, unquote(g)) for n, g in zip(names, m.groups(), strict=True))
    return ("$default", ()) if any(k.is_default for k in keys) else None


def test_one_pattern_takes_the_route_a_scan_in_precedence_order_takes():
    """Every route is one alternative of one regular expression; for any request it must pick the
    route (and parameters) that trying each route's own pattern in precedence order picks."""
    import random

    rng = random.Random(7)
    words = ["a", "b", "books", "{id}", "{x}", "{rest+}"]
    keys = []
    for _ in range(60):
        segs: list[str] = []
        for _ in range(rng.randint(0, 4)):
            seg = rng.choice(words)
            if seg.startswith("{") and seg in segs:
                continue  # a parameter name appears once per route
            segs.append(seg)
            if seg.endswith("+}"):
                break  # a greedy parameter ends the path
        text = rng.choice(["GET", "POST", "ANY"]) + " /" + "/".join(segs)
        try:
            key = parse_route_key(text)
        except ValueError:
            continue
        if all(key.shape != k.shape for k in keys):
            keys.append(key)
    keys.append(parse_route_key("$default"))
    router = Router(keys)
    parts = ["a", "b", "books", "42", "a%2Fb", "x y", ""]
    checked = 0
    for method in ("GET", "POST", "PUT", "GET\x00/a"):
        for _ in range(300):
            path = "/" + "/".join(rng.choice(parts) for _ in range(rng.randint(0, 5)))
            m = router.match(method, path)
            expected = ("$default", ()) if "\x00" in method else _scan(keys, method, path)
            assert (m.key, m.params) == expected, (method, path)
            checked += m.key != "$default"
    assert checked > 300  # most requests found a route of their own, not the catch-all
