"""The DNS baseline: a bare dnspython UDP responder answering one fixed A record.

    python tests/bench/dns_responder.py PORT

Parse the query, answer it with `127.0.0.1`, render: the least a Python DNS server
built on dnspython does, so the gateway's figures are read against it.
"""

from __future__ import annotations

import asyncio
import sys

import dns.message
import dns.rrset


class Responder(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        name = query.question[0].name
        response.answer.append(dns.rrset.from_text(name, 0, "IN", "A", "127.0.0.1"))
        self.transport.sendto(response.to_wire(), addr)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
