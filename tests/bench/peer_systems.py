"""The same registry work, said three ways: Baton, etcd and ZooKeeper, as their users do it.

- Baton: a registration request per instance (`registry.v1.register.{service}`), the
  registry's events (`registry.v1.events.{service}`) to watch, the SDK's
  `BalancerClient.resolve` to discover.
- etcd (the lease-and-watch pattern of go-zero, Kratos, APISIX, gRPC naming): a lease
  per instance, a key per instance under `/services/{service}/` put with that lease, a
  watch on the prefix; discovery is a range read of the prefix and a pick. Client: aetcd
  (asyncio, on etcd's gRPC API).
- ZooKeeper (Dubbo's pattern): an ephemeral node per instance under
  `/services/{service}` whose name is its address, a child watch (kazoo's ChildrenWatch,
  which sets the watch again and reads the children on every change, as Curator does);
  discovery reads the children and picks. Client: kazoo. A bench process owns its nodes
  through a few sessions (`SESSIONS`): a session per instance from one process would be
  10,000 connections; owning processes of their own are used where that matters, for
  failure detection (tests/bench/peer_instance.py).

Every watcher calls `on_change(instance_id, present, at)` with `at` from
`time.monotonic()` taken where the client library handed the change over.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any, Protocol

import aetcd
import msgspec
from kazoo.client import KazooClient

from schemas import subjects
from schemas.registry import InstanceEvent, Registration
from services.sdk import BalancerClient

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from nats.aio.client import Client

__all__ = ["BatonSystem", "EtcdSystem", "System", "ZkSystem", "zk_path"]

SESSIONS = 16  # ZooKeeper sessions one bench process registers its instances through
LONG_TTL_S = 3600  # instances that must outlive the measure: no keep-alive needed
GONE = {"unhealthy", "expired", "deregistered"}


class System(Protocol):
    name: str

    async def register(self, service: str, iid: str, port: int) -> None: ...
    async def watch(self, service: str, on_change: Callable[[str, bool, float], None]) -> None: ...
    async def pick(self, service: str) -> str: ...
    async def close(self) -> None: ...


async def in_window(ids: Iterable[str], window: int, one: Callable[[str], Any]) -> None:
    """`one(id)` for every id, `window` at once: the storm's shape for every system."""
    slots = asyncio.Semaphore(window)

    async def bounded(iid: str) -> None:
        async with slots:
            await one(iid)

    await asyncio.gather(*(bounded(i) for i in ids))


class BatonSystem:
    name = "Baton"

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.client = BalancerClient(nc)
        self._encode = msgspec.json.Encoder().encode
        self._event = msgspec.json.Decoder(InstanceEvent).decode

    async def register(self, service: str, iid: str, port: int) -> None:
        reg = Registration(instance_id=iid, host="127.0.0.1", port=port, ttl_s=LONG_TTL_S)
        await self.nc.request(subjects.register(service), self._encode(reg), timeout=30)

    async def watch(self, service: str, on_change: Callable[[str, bool, float], None]) -> None:
        async def on_event(msg: Any) -> None:
            at = time.monotonic()
            event = self._event(msg.data)
            if event.kind == "registered":
                on_change(event.instance.instance_id, True, at)  # noqa: FBT003
            elif event.kind in GONE:
                on_change(event.instance.instance_id, False, at)  # noqa: FBT003

        await self.nc.subscribe(subjects.events(service), cb=on_event)
        await self.nc.flush()

    async def pick(self, service: str) -> str:
        ep = await self.client.resolve(service)
        return f"{ep.host}:{ep.port}"

    async def close(self) -> None:
        await self.client.aclose()


class EtcdSystem:
    name = "etcd"

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = aetcd.Client(host="127.0.0.1", port=port, timeout=30)
        self.watcher = aetcd.Client(host="127.0.0.1", port=port)  # a watcher's own connection
        self._watches: list[asyncio.Task[None]] = []

    async def register(self, service: str, iid: str, port: int) -> None:
        lease = await self.client.lease(LONG_TTL_S)
        await self.client.put(key(service, iid), f"127.0.0.1:{port}".encode(), lease=lease)

    async def granted_ttl(self, ttl_s: int) -> int:
        """The TTL etcd grants when asked for `ttl_s` (it raises it to its floor)."""
        lease = await self.client.lease(ttl_s)
        granted = int(await lease.granted_ttl())
        await lease.revoke()
        return granted

    async def watch(self, service: str, on_change: Callable[[str, bool, float], None]) -> None:
        prefix = f"/services/{service}/".encode()
        events = await self.watcher.watch_prefix(prefix)

        async def follow() -> None:
            async for event in events:
                at = time.monotonic()
                iid = event.kv.key.decode().rsplit("/", 1)[1]
                on_change(iid, event.kind == "PUT", at)

        self._watches.append(asyncio.create_task(follow()))

    async def pick(self, service: str) -> str:
        kvs = await self.client.get_prefix(f"/services/{service}/".encode())
        return bytes(random.choice(list(kvs)).value).decode()

    async def close(self) -> None:
        for task in self._watches:
            task.cancel()
        await asyncio.gather(*self._watches, return_exceptions=True)
        await self.watcher.close()
        await self.client.close()


def key(service: str, iid: str) -> bytes:
    return f"/services/{service}/{iid}".encode()


def zk_path(service: str, iid: str | None = None) -> str:
    """Dubbo-style: the node's name carries the instance (its address, in Dubbo's URL)."""
    return f"/services/{service}" if iid is None else f"/services/{service}/{iid}"


def settled(result: Any) -> asyncio.Future[Any]:
    """A kazoo IAsyncResult (settled on kazoo's thread) as an asyncio future."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(r: Any) -> None:
        if future.done():
            return
        if r.successful():
            future.set_result(r.value)
        else:
            future.set_exception(r.exception)

    result.rawlink(lambda r: loop.call_soon_threadsafe(deliver, r))
    return future


class ZkSystem:
    name = "ZooKeeper"

    def __init__(self, port: int) -> None:
        hosts = f"127.0.0.1:{port}"
        self.sessions = [KazooClient(hosts=hosts) for _ in range(SESSIONS)]
        self.watcher = KazooClient(hosts=hosts)  # a watcher's own session
        self._next = 0

    async def start(self) -> None:
        for zk in [*self.sessions, self.watcher]:
            await asyncio.to_thread(zk.start, 30)

    async def register(self, service: str, iid: str, port: int) -> None:
        del port  # the name is the address in Dubbo; here the id stands for it
        self._next = (self._next + 1) % len(self.sessions)
        zk = self.sessions[self._next]
        await settled(zk.create_async(zk_path(service, iid), b"", ephemeral=True, makepath=True))

    async def ensure(self, service: str) -> None:
        await asyncio.to_thread(self.sessions[0].ensure_path, zk_path(service))

    async def watch(self, service: str, on_change: Callable[[str, bool, float], None]) -> None:
        await self.ensure(service)
        loop = asyncio.get_running_loop()
        known: set[str] = set()

        def changed(children: list[str]) -> None:  # on kazoo's thread
            at = time.monotonic()
            now = set(children)
            added, gone = now - known, known - now
            known.clear()
            known.update(now)
            for iid in added:
                loop.call_soon_threadsafe(on_change, iid, True, at)  # noqa: FBT003
            for iid in gone:
                loop.call_soon_threadsafe(on_change, iid, False, at)  # noqa: FBT003

        await asyncio.to_thread(self.watcher.ChildrenWatch, zk_path(service), changed)

    async def pick(self, service: str) -> str:
        children = await settled(self.sessions[0].get_children_async(zk_path(service)))
        return str(random.choice(children))

    async def close(self) -> None:
        for zk in [*self.sessions, self.watcher]:
            await asyncio.to_thread(zk.stop)
            zk.close()
