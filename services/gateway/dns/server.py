"""DNS over UDP and TCP on asyncio: the transport around the Responder.

UDP: one datagram, one answer, each handled in its own task (a query waiting for the
balancer's pick does not hold up the next). TCP (RFC 1035 4.2.2, RFC 7766): each message
has a 2-byte length prefix; a connection may carry many queries, answered in order; an
idle one is closed after `idle_s`. Nothing a client sends can end the server: a handler
error is logged and counted, and the packet gets no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, cast

from services.errors import StartupError
from services.lifecycle import Lifecycle

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from services.gateway.dns.responder import Responder

__all__ = ["DnsServer"]

_IDLE_S = 10.0  # a TCP connection with no query this long is closed (RFC 7766: seconds)
_MAX_TASKS = 10_000  # UDP queries in progress at once; more are dropped (clients retry)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a datagram transport, by create_datagram_endpoint (not always its subclass)
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        tasks = self.server.tasks
        if len(tasks) >= _MAX_TASKS:
            self.server.responder.counts["dropped"] += 1
            return
        task = asyncio.create_task(self._answer(data, addr))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = await self.server.answer(data, tcp=False, client=str(addr[0]))
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        self.server.log.debug("dns.udp_error", error=str(exc))


class DnsServer(Lifecycle):
    def __init__(
        self,
        responder: Responder,
        log: FilteringBoundLogger,
        *,
        host: str,
        port: int,
        idle_s: float = _IDLE_S,
    ) -> None:
        self.responder = responder
        self.log = log
        self.host = host
        self.port = port  # the bound port once started (the setting may be 0: any)
        self.idle_s = idle_s
        self.tasks: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # TCP first on the asked port; UDP then on the same number (any free one for 0)
            self._tcp = await asyncio.start_server(self._on_tcp, self.host, self.port)
            self.port = self._tcp.sockets[0].getsockname()[1]
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, self.port)
            )
        except OSError as exc:
            await self.stop()
            raise StartupError(
                f"cannot listen for DNS on {self.host}:{self.port} (UDP and TCP): "
                f"{exc.strerror}; free the port or set GATEWAY_DNS_PORT (0 turns DNS off)"
            ) from exc
        self.log.info("dns.listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
        for task in list(self.tasks):
            task.cancel()

    async def answer(self, data: bytes, *, tcp: bool, client: str = "") -> bytes | None:
        try:
            return await self.responder.respond(data, tcp=tcp, client=client)
        except Exception:  # a bug answers nothing for this packet, and nothing else breaks
            self.responder.counts["errors"] += 1
            self.log.exception("dns.query_failed", size=len(data), tcp=tcp)
            return None

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), self.idle_s)
                data = await asyncio.wait_for(
                    reader.readexactly(int.from_bytes(head, "big")), self.idle_s
                )
                reply = await self.answer(data, tcp=True, client=client)
                if reply is None:
                    break  # unreadable: the stream may be out of step; close it
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # idle, closed by the client, or reset: all normal ends
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
