"""The prober bench's target: health URLs whose answers the bench sets.

`GET /h/<name>` answers 200 ("ok"), or the code `PUT /set/<name>/<code>` set for it; the
same target serves the prober and the bare aiohttp loop it is compared with. A bare
asyncio protocol, one answer per connection (both clients close after one request), so
the target is not what the bench measures.

    python tests/bench/check_target.py PORT
"""

from __future__ import annotations

import asyncio
import sys

_REASONS = {200: "OK", 503: "Service Unavailable", 404: "Not Found"}


def _answer(code: int, body: bytes) -> bytes:
    head = f"HTTP/1.1 {code} {_REASONS.get(code, 'Other')}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


class Target(asyncio.Protocol):
    codes: dict[str, int] = {}  # noqa: RUF012  # one table for the process's connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        method, path = self.buffer.split(b" ", 2)[:2]
        parts = path.decode().strip("/").split("/")
        if method == b"PUT" and len(parts) == 3 and parts[0] == "set":
            self.codes[parts[1]] = int(parts[2])
            reply = _answer(200, b"set")
        elif len(parts) == 2 and parts[0] == "h":
            reply = _answer(self.codes.get(parts[1], 200), b"ok")
        else:
            reply = _answer(404, b"")
        self.transport.write(reply)
        self.transport.close()


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Target, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
