"""The prober worker: runs the active health checks registrations declare (HTTP, TCP, gRPC).

It follows the registry (a snapshot, then events: services/view/sync.py) for every
instance's `checks`, schedules each check on fixed slots spread over its interval
(schedule.py), and runs a check only when it owns it among the live prober replicas
(ownership.py: presence heartbeats on `prober.v1.presence`, rendezvous hashing). Every run
is published on `prober.v1.results.{service}` (the collector's); only the runs that can
change an instance's health, transitions and periodic refreshes (relay.py), also go on
`prober.v1.transitions.{service}`, which the registry and every replica follow, so the
check's status survives a change of owner. Each run is its own task with its own deadline
(probes.py), bounded by `concurrency`: a target that hangs costs one task until its
timeout, never a stall of the others.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta, Struct

from schemas import subjects
from schemas.checks import CheckDefinition, CheckResult, ProberPresence, validate_checks
from schemas.fields import utcnow
from services.errors import BadRequest, BatonError
from services.lifecycle import Lifecycle, cancel_and_wait
from services.prober.ownership import Replicas
from services.prober.probes import Outcome, Probes
from services.prober.relay import RegistryFeed
from services.prober.schedule import Slots
from services.prober.thresholds import Damper
from services.view.sync import RegistrySync

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from schemas.checks import CheckStatus
    from schemas.registry import Instance
    from services.bus import Bus

__all__ = ["Prober", "ProberSettings"]


class ProberSettings(Struct, frozen=True, kw_only=True):
    """Environment: PROBER_<FIELD>, e.g. PROBER_ALLOW_ANY_TARGET=true."""

    # let checks probe any host, not only their instance's own registered host (the
    # registry refuses such registrations unless REGISTRY_ALLOW_ANY_TARGET is set too)
    allow_any_target: bool = False
    # how often each replica announces itself on prober.v1.presence
    heartbeat_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    # a replica silent this long is gone and its checks move (0: 3 x heartbeat_s)
    dead_after_s: Annotated[float, Meta(ge=0, le=600)] = 0.0
    # checks running at once in this replica; more wait their turn
    concurrency: Annotated[int, Meta(ge=1, le=100_000)] = 1024
    # HTTP redirects followed before a check is critical
    max_redirects: Annotated[int, Meta(ge=0, le=100)] = 10
    # deadline of each registry request, and how often the registry is re-read in full
    registry_timeout_s: Annotated[float, Meta(gt=0)] = 2.0
    resync_s: Annotated[float, Meta(gt=0)] = 30.0
    # a check's result goes to the registry on a change of status, and at least this often
    # (anti-entropy: a lost transition heals within it)
    refresh_s: Annotated[float, Meta(gt=0, le=86_400)] = 60.0


@dataclass(slots=True)
class Entry:
    """One check this replica knows of (owned or not)."""

    service: str
    instance_id: str
    check: CheckDefinition
    damper: Damper
    refusal: str = ""  # the safety rule refuses its target: critical, with this output
    feed: RegistryFeed = field(default_factory=RegistryFeed)  # what the registry was told


_encode = msgspec.json.Encoder().encode


def check_key(service: str, instance_id: str, check_id: str) -> str:
    return f"{service}/{instance_id}/{check_id}"


class Prober(Lifecycle):
    def __init__(
        self,
        bus: Bus,
        settings: ProberSettings,
        log: FilteringBoundLogger,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.log = log
        self.clock = clock
        self.wallclock = wallclock
        self.replica = secrets.token_hex(8)
        dead_after = settings.dead_after_s or 3 * settings.heartbeat_s
        self.replicas = Replicas(self.replica, dead_after)
        self.entries: dict[str, Entry] = {}
        self.by_instance: dict[tuple[str, str], set[str]] = {}
        self.slots = Slots()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.runs = 0  # checks run by this replica
        self._slots_changed = asyncio.Event()
        self._gate = asyncio.Semaphore(settings.concurrency)
        self.probes = Probes(max_redirects=settings.max_redirects)
        self.sync = RegistrySync(
            bus,
            self,
            log,
            timeout_s=settings.registry_timeout_s,
            resync_s=settings.resync_s,
            name="prober.sync",
        )

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.enter(self.probes)
        serve = self.owned(self.bus.serve)
        await serve(subjects.PROBER_PRESENCE, ProberPresence, self._on_presence, answer=False)
        # a check's status changes only with a transition: the other replicas' transitions are
        # all this replica needs to continue a check it takes over
        listen = self.owned(self.bus.listen)
        await listen(subjects.PROBER_TRANSITIONS, CheckResult, self._on_result)
        await self._announce()
        self.on_close(self._leave)
        await self.enter(self.sync)
        self.spawn(self._presence_loop(), "prober.presence")
        self.spawn(self._schedule_loop(), "prober.schedule")
        self.on_close(self._cancel_runs)
        self.log.info("prober.ready", replica=self.replica)

    async def _cancel_runs(self) -> None:
        for task in list(self.running.values()):
            await cancel_and_wait(task)

    async def _leave(self) -> None:
        """Tell the others at once: they take this replica's checks from their next slot."""
        if self.bus.connected:
            presence = ProberPresence(
                replica=self.replica, heartbeat_s=self.settings.heartbeat_s, leaving=True
            )
            await self.bus.send(subjects.PROBER_PRESENCE, _encode(presence))
            await self.bus.confirm()

    # -- the live replicas ---------------------------------------------------------------
    async def _announce(self) -> None:
        presence = ProberPresence(replica=self.replica, heartbeat_s=self.settings.heartbeat_s)
        await self.bus.send(subjects.PROBER_PRESENCE, _encode(presence))

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self._announce()
            except BatonError as exc:  # the others keep us only while we are heard
                self.log.warning("prober.announce_failed", error=exc.message)
            for gone in self.replicas.expire(self.clock()):
                self.log.info("prober.replica_gone", replica=gone, live=self.replicas.live)

    def _on_presence(self, _subject: str, presence: ProberPresence) -> None:
        if self.replicas.heard(presence.replica, self.clock(), leaving=presence.leaving):
            self.log.info(
                "prober.replicas_changed",
                replica=presence.replica,
                leaving=presence.leaving,
                live=self.replicas.live,
            )

    # -- the checks, as RegistrySync feeds them ------------------------------------------
    def upsert(self, service: str, instance: Instance) -> None:
        key_of = (service, instance.instance_id)
        keys = self.by_instance.setdefault(key_of, set())
        wanted: set[str] = set()
        for check in instance.checks:
            if check.kind == "ttl":  # the registry's lease: nothing to probe
                continue
            key = check_key(service, instance.instance_id, check.check_id)
            wanted.add(key)
            known = self.entries.get(key)
            if known is not None and known.check == check:
                continue
            damper = known.damper if known is not None else Damper(check.status)
            self.entries[key] = Entry(
                service, instance.instance_id, check, damper, self._refusal(check, instance)
            )
            self.slots.add(key, check.interval_s, self.wallclock())
            self._slots_changed.set()
        for key in keys - wanted:
            self._forget(key)
        if wanted:
            self.by_instance[key_of] = wanted
        else:
            del self.by_instance[key_of]

    def remove(self, service: str, instance_id: str) -> None:
        for key in self.by_instance.pop((service, instance_id), set()):
            self._forget(key)

    def known(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for service, instance_id in self.by_instance:
            out.setdefault(service, set()).add(instance_id)
        return out

    def _forget(self, key: str) -> None:
        self.entries.pop(key, None)
        self.slots.drop(key)

    def _refusal(self, check: CheckDefinition, instance: Instance) -> str:
        """The safety rule, held by the prober too: the registry may allow more than it."""
        try:
            validate_checks([check], instance.host, allow_any_target=self.settings.allow_any_target)
        except BadRequest as exc:
            return f"not probed: {exc.message}"
        return ""

    # -- results: ours and the other replicas' -------------------------------------------
    def _on_result(self, service: str, result: CheckResult) -> None:
        if result.prober == self.replica:
            return
        entry = self.entries.get(check_key(service, result.instance_id, result.check_id))
        if entry is not None:  # another replica ran it: its status is the check's status
            entry.damper.status = result.status

    # -- running checks ------------------------------------------------------------------
    async def _schedule_loop(self) -> None:
        while True:
            now = self.wallclock()
            for key, slot in self.slots.due(now):
                entry = self.entries.get(key)
                if entry is None:
                    continue
                self.slots.add(key, entry.check.interval_s, max(now, slot))
                # one run of a check at a time: a run still going (timeout = interval)
                # means this slot is skipped
                if not self.replicas.owns(key):
                    entry.feed.forget()  # if it comes back, its first run tells the registry
                elif key not in self.running:
                    task = asyncio.create_task(self._run(key, entry), name=f"prober.run.{key}")
                    self.running[key] = task
                    task.add_done_callback(functools.partial(self._ran, key))
            due = self.slots.next_due()
            wait = 1.0 if due is None else max(0.0, min(1.0, due - self.wallclock()))
            self._slots_changed.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._slots_changed.wait()
            except TimeoutError:
                pass

    def _ran(self, key: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(key, None)

    async def _run(self, key: str, entry: Entry) -> None:
        async with self._gate:
            if entry.refusal:
                outcome = Outcome("critical", entry.refusal, 0.0)
            else:
                outcome = await self.probes.run(entry.check)
        self.runs += 1
        if self.entries.get(key) is not entry:
            return  # deregistered or changed meanwhile: this result describes nothing
        previous = entry.damper.status
        status = entry.damper.observe(outcome.status, entry.check)
        result = CheckResult(
            instance_id=entry.instance_id,
            check_id=entry.check.check_id,
            status=status,
            output=outcome.output,
            at=utcnow(),
            duration_ms=round(outcome.duration_ms, 3),
            previous=previous,
            prober=self.replica,
        )
        if status != previous:
            self._log_transition(entry, previous, status, outcome.output)
        payload = _encode(result)
        try:
            await self.bus.send(subjects.check_results(entry.service), payload)
            if entry.feed.tells(status, self.clock(), self.settings.refresh_s):
                await self.bus.send(subjects.check_transitions(entry.service), payload)
        except BatonError as exc:  # the next run publishes again; quiet while stopping
            entry.feed.forget()  # and tells the registry again, lest a transition be lost
            (self.log.warning if self.bus.connected else self.log.debug)(
                "check.publish_failed", check=key, error=exc.message
            )

    def _log_transition(
        self, entry: Entry, previous: CheckStatus, status: CheckStatus, output: str
    ) -> None:
        self.log.info(
            "check.transitioned",
            service=entry.service,
            instance=entry.instance_id,
            check=entry.check.check_id,
            previous=previous,
            status=status,
            output=output[:200],
        )
