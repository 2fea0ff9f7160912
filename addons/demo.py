"""A small demo backend for trying sidegate: ``sidegate run --demo`` starts it beside the sidecar.

Routes: ``GET /health``; ``GET /books``; ``GET /books/{id}``; ``POST /books`` (stores the JSON
body in memory); ``GET /slow?seconds=N`` (to see the integration timeout); anything else echoes
the request (method, path, headers) so you can see what the sidecar forwarded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from aiohttp import web

BOOKS: dict[str, dict[str, Any]] = {
    "1": {"id": "1", "title": "The Pragmatic Programmer", "author": "Hunt, Thomas"},
    "2": {"id": "2", "title": "Release It!", "author": "Nygard"},
}
MAX_SLOW = 60.0


def app() -> web.Application:
    books = dict(BOOKS)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def list_books(request: web.Request) -> web.Response:
        return web.json_response(list(books.values()))

    async def get_book(request: web.Request) -> web.Response:
        book = books.get(request.match_info["id"])
        if book is None:
            return web.json_response({"error": "no such book"}, status=404)
        return web.json_response(book)

    async def add_book(request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "expected a JSON body"}, status=400)
        if not isinstance(data, dict) or not isinstance(data.get("title"), str):
            return web.json_response({"error": 'expected {"title": ...}'}, status=400)
        book_id = str(len(books) + 1)
        books[book_id] = {"id": book_id, "title": data["title"], "author": str(data.get("author", ""))}
        return web.json_response(books[book_id], status=201)

    async def slow(request: web.Request) -> web.Response:
        try:
            seconds = min(float(request.query.get("seconds", "5")), MAX_SLOW)
        except ValueError:
            seconds = 5.0
        await asyncio.sleep(seconds)
        return web.json_response({"slept": seconds})

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": dict(request.headers),
                "body_bytes": len(body),
            }
        )

    application = web.Application(client_max_size=16 * 1024 * 1024)
    application.router.add_get("/health", health)
    application.router.add_get("/books", list_books)
    application.router.add_post("/books", add_book)
    application.router.add_get("/books/{id}", get_book)
    application.router.add_get("/slow", slow)
    application.router.add_route("*", "/{tail:.*}", echo)
    return application


def serve(host: str, port: int) -> None:
    web.run_app(app(), host=host, port=port, print=None, access_log=None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="sidegate demo backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    serve(args.host, args.port)
