"""A worker's copy of the registry: a snapshot, then events, never a gap.

What feeds the read model (catalog.py, the `Fleet` the sync applies to) that the
balancer's pools and the gateway's answers follow.

Events carry the registry's boot id (`epoch`) and a sequence number. The view follows
them in order; a gap in the sequence (events lost while NATS was away), a new epoch (the
registry restarted) or a reconnect triggers a new snapshot. Events that arrive while a
snapshot is being read are held and applied after it, skipping those it already shows.

A snapshot from a registry that has not settled (it restarted moments ago and is still
hearing from its instances) is merged, never used to remove; a full snapshot follows
once it has settled. So a restarted registry never empties a view.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Literal, Protocol

from schemas import subjects
from schemas.registry import Empty, InstanceEvent, InstanceList, ServiceList
from services.errors import BatonError, NotFound
from services.lifecycle import Lifecycle
from services.pages import pages
from services.retry import Backoff

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from schemas.registry import Instance
    from services.bus import Bus

__all__ = ["Fleet", "Order", "RegistrySync", "order"]

RETRY_CAP_S = 10.0  # failed snapshots are retried from retry_s up to this (services/retry.py)


Order = Literal["next", "stale", "gap", "restarted"]


def order(epoch: str, seq: int, event_epoch: str, event_seq: int) -> Order:
    """Where an event stands against the view, which has applied `seq` of `epoch`:
    the `next` one, `stale` (applied already), after a `gap` (events were lost), or from
    a registry that `restarted` (a new epoch). After a gap or a restart, the event is
    applied and a snapshot fills in what was missed."""
    if event_epoch != epoch:
        return "restarted"
    if event_seq == seq + 1:
        return "next"
    return "stale" if event_seq <= seq else "gap"


class Fleet(Protocol):
    """What the sync applies to: the read model (catalog.py RegistryView)."""

    def upsert(self, service: str, instance: Instance) -> None: ...

    def remove(self, service: str, instance_id: str) -> None: ...

    def known(self) -> dict[str, set[str]]: ...


class RegistrySync(Lifecycle):
    def __init__(
        self,
        bus: Bus,
        fleet: Fleet,
        log: FilteringBoundLogger,
        *,
        timeout_s: float,
        resync_s: float,
        retry_s: float = 1.0,
        name: str = "registry.sync",
    ) -> None:
        self.bus = bus
        self.fleet = fleet
        self.log = log
        self.timeout_s = timeout_s
        self.resync_s = resync_s
        self.retry_s = retry_s
        self.name = name
        self.epoch = ""
        self.seq = 0
        self.synced = asyncio.Event()  # set after the first complete snapshot
        self.snapshots = 0
        self._held: list[InstanceEvent] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        serve = self.owned(self.bus.serve)
        await serve(subjects.EVENTS, InstanceEvent, self._on_event, answer=False, per_service=True)
        self.bus.reconnect_hooks.append(self.request_snapshot)
        self.on_close(self._unhook)
        self.spawn(self._loop(), self.name)
        self.request_snapshot_now()

    async def _unhook(self) -> None:
        with contextlib.suppress(ValueError):
            self.bus.reconnect_hooks.remove(self.request_snapshot)

    def request_snapshot_now(self) -> None:
        self._wake.set()

    async def request_snapshot(self) -> None:
        self._wake.set()

    # -- events --------------------------------------------------------------------------
    async def _on_event(self, _subject: str, event: InstanceEvent) -> None:
        if self._held is not None:
            self._held.append(event)
            return
        where = order(self.epoch, self.seq, event.epoch, event.seq)
        if where == "stale":
            return  # a duplicate or stale event: already applied
        if where != "next":
            event_name = "registry.gap" if where == "gap" else "registry.restarted"
            self.log.info(event_name, seen=self.seq, got=event.seq, epoch=event.epoch)
            self._wake.set()  # apply it now, then read a snapshot to fill what we missed
        self.epoch, self.seq = event.epoch, event.seq
        self._apply(event)

    def _apply(self, event: InstanceEvent) -> None:
        if event.kind in ("expired", "deregistered"):
            self.fleet.remove(event.service, event.instance.instance_id)
        else:
            self.fleet.upsert(event.service, event.instance)

    # -- snapshots -----------------------------------------------------------------------
    async def _loop(self) -> None:
        retry = Backoff(base_s=self.retry_s, cap_s=max(self.retry_s, RETRY_CAP_S)).retry()
        while True:
            # on a timeout, a periodic snapshot: anti-entropy against anything missed
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that
            # comes as the event is set (a start failing just after this one), and the
            # loop would then outlive its owner
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.resync_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                settled = await self._snapshot()
            except BatonError as exc:
                self.log.warning(
                    "registry.snapshot_failed", error=exc.message, attempt=retry.attempts + 1
                )
                await retry.wait()
                self._wake.set()
                continue
            except Exception:  # a bug must not end syncing for good
                self.log.exception("registry.snapshot_crashed")
                await retry.wait()
                self._wake.set()
                continue
            retry.reset()
            if not settled:
                asyncio.get_running_loop().call_later(self.retry_s, self._wake.set)

    async def _snapshot(self) -> bool:
        """Read the registry whole; True if it was settled (and so applied in full)."""
        self._held = []
        try:
            listed = await self.bus.request(
                subjects.SERVICES, Empty(), ServiceList, timeout=self.timeout_s
            )
            lists = [await self._instances(s, listed) for s in listed.services]
        except BaseException:
            held, self._held = self._held, None
            for event in held:  # keep what arrived meanwhile
                await self._on_event("", event)
            raise
        floor = self._install(lists, full=listed.settled)
        self.epoch = listed.epoch
        held, self._held = self._held, None
        seqs = [listed.seq, *floor.values()]
        for event in held:
            if event.epoch != self.epoch:
                self._apply(event)  # from a registry newer than the snapshot's
                self.epoch, seqs = event.epoch, [event.seq]
                self._wake.set()
            elif event.seq > floor.get(event.service, listed.seq):
                self._apply(event)  # news to the snapshot
                seqs.append(event.seq)
        self.seq = max(seqs)
        self.snapshots += 1
        self.log.info(
            "registry.snapshot",
            services=len(lists),
            instances=sum(len(lst.instances) for lst in lists),
            epoch=self.epoch,
            seq=self.seq,
            full=listed.settled,
        )
        if listed.settled:
            self.synced.set()
        return listed.settled

    def _install(self, lists: list[InstanceList], *, full: bool) -> dict[str, int]:
        """Apply the snapshot's lists (removing what they lack if `full`); their seqs."""
        known = self.fleet.known()
        floor: dict[str, int] = {}
        for lst in lists:
            floor[lst.service] = lst.seq
            for instance in lst.instances:
                self.fleet.upsert(lst.service, instance)
        if full:
            listed = {lst.service: {i.instance_id for i in lst.instances} for lst in lists}
            for service, ids in known.items():
                for gone in ids - listed.get(service, set()):
                    self.fleet.remove(service, gone)
        return floor

    async def _instances(self, service: str, listed: ServiceList) -> InstanceList:
        try:
            read = [page async for page in pages(self.bus, service, timeout=self.timeout_s)]
        except NotFound:  # the service emptied meanwhile; its events are held
            return InstanceList(service=service, instances=[], epoch=listed.epoch, seq=listed.seq)
        first = read[0]
        return InstanceList(
            service=service,
            instances=[i for page in read for i in page.instances],
            epoch=first.epoch,
            seq=first.seq,  # the oldest page decides which held events are still news
            settled=first.settled,
        )
