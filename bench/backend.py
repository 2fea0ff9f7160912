"""A minimal, fast HTTP/1.1 keep-alive backend for the benchmark.

Every request gets the same small ``200 OK``. It is an ``asyncio.Protocol`` that parses only what
it must (the end of the header block, ``Content-Length`` to skip a body, ``Connection: close``),
so it costs a few µs per request and is never the bottleneck in front of a proxy that spends
hundreds of µs per request. Pipelined requests are answered in order.

    python bench/backend.py --port 18081 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import signal

BODY = b'{"ok":true}\n'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
MAX_HEADER = 64 * 1024  # a header block larger than this closes the connection


class Http(asyncio.Protocol):
    __slots__ = ("buf", "skip", "transport")

    def __init__(self) -> None:
        self.buf = b""
        self.skip = 0  # request body bytes still to discard
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.skip:
            if len(data) <= self.skip:
                self.skip -= len(data)
                return
            data = data[self.skip :]
            self.skip = 0
        buf = self.buf + data if self.buf else data
        out = []
        close = False
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower()
            buf = buf[end + 4 :]
            length = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                try:
                    length = int(head[i + 17 : j if j >= 0 else len(head)].strip())
                except ValueError:
                    close = True
            if b"\r\nconnection: close" in head:
                close = True
            out.append(RESPONSE)
            if close:
                break
            if length:
                if len(buf) >= length:
                    buf = buf[length:]
                else:
                    self.skip = length - len(buf)
                    buf = b""
                    break
        self.buf = buf
        assert self.transport is not None
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close or len(self.buf) > MAX_HEADER:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"backend listening on http://{host}:{port}/", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the benchmark backend listens on loopback only")
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
