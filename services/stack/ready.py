"""Readiness by `$SRV.PING`: a worker is ready once it answers for itself.

Every worker announces itself (services/micro.py) only after it serves, with its pid in
the reply's metadata, so the stack waits for the ping of *that* child, not for a line in
its log, and not for another replica of the same worker on a shared NATS_URL (one
server, or a cluster's list of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import msgspec
import nats
import nats.errors

from schemas import subjects
from schemas.micro import Ping
from services import micro
from services.config import parse_servers

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client

    from services.stack.supervisor import Child, Supervisor

__all__ = ["answers", "ping_of", "pinged", "wait_pinged"]

_decode = msgspec.json.Decoder(Ping).decode
_POLL_S = 0.1  # between pings while the worker starts


async def ping_of(nc: Client, name: str, pid: int, window_s: float = 0.25) -> Ping | None:
    """The `$SRV.PING.<name>` reply of the process `pid`, if it answers within the window."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subjects.srv("PING", name), b"", reply=inbox)
        deadline = time.monotonic() + window_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                return None
            with contextlib.suppress(msgspec.MsgspecError):
                ping = _decode(msg.data)
                if (ping.metadata or {}).get("pid") == str(pid):
                    return ping
        return None
    finally:
        await sub.unsubscribe()


async def wait_pinged(
    url: str, name: str, pid: int, *, check: Callable[[], None], timeout_s: float
) -> Ping:
    """Ping until process `pid` answers as `name`; `check()` raises to give up (the child
    died, a stop was asked); TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    nc = await asyncio.wait_for(nats.connect(parse_servers(url), name="baton-stack"), timeout_s)
    try:
        while True:
            check()
            ping = await ping_of(nc, name, pid)
            if ping is not None:
                return ping
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(_POLL_S)
    finally:
        await nc.close()


def pinged(sup: Supervisor, child: Child, url: str, timeout_s: float, *, worker: str) -> str:
    """Wait until the child running `worker` answers `$SRV.PING` for itself; its id."""
    name = micro.worker_name(worker)
    try:
        ping = asyncio.run(
            wait_pinged(url, name, child.pid, check=lambda: sup.check(child), timeout_s=timeout_s)
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:  # NATS itself unreachable too
        raise sup.not_ready(child, timeout_s) from exc
    return ping.id


def answers(url: str, worker: str, pid: int, *, timeout_s: float = 1.0) -> bool:
    """Does process `pid` answer `$SRV.PING` as `worker` now? (One ping, no waiting.)"""

    async def ask() -> bool:
        nc = await asyncio.wait_for(
            nats.connect(parse_servers(url), name="baton-stack", allow_reconnect=False),
            timeout_s,
        )
        try:
            return await ping_of(nc, micro.worker_name(worker), pid) is not None
        finally:
            await nc.close()

    try:
        return asyncio.run(ask())
    except (TimeoutError, OSError, nats.errors.Error):
        return False
