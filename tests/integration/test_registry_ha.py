"""Registry replicas on a real 3-node cluster: each a `python -m services.registry` process,
killed with SIGKILL. A fleet heartbeats throughout; a real subscriber to every event
counts duplicates, gaps and events that did not happen."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats
import nats.errors
import pytest
from barrier import subscribed
from waiting import until

from schemas import subjects
from schemas.errors import ERROR_CODE_HEADER
from schemas.registry import InstanceEvent, InstanceList, ReplicaStatus
from services.sdk import ServiceAgent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from nats.aio.client import Client
    from natscluster import NatsCluster
    from natsserver import NatsServer

ROOT = Path(__file__).resolve().parents[2]
SVC = "orders"
TTL = 1.5  # instance lease; heartbeats every TTL / 5
FAKE = {"unhealthy", "expired", "deregistered"}  # nothing in these tests makes them happen


class Replica:
    """A registry process; its replica id is read from its own `registry.ready` log line."""

    def __init__(self, url: str, log_path: Path, **settings: str) -> None:
        env = {
            **os.environ,
            "NATS_URL": url,
            "LOG_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT),
            "REGISTRY_SWEEP_S": "0.05",
            "REGISTRY_SETTLE_S": "0",
            "REGISTRY_LEADER_LEASE_S": "1",
            **settings,
        }
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.registry"], env=env, stdout=log, stderr=log,
                cwd=ROOT,
            )  # fmt: skip

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]

    @property
    def id(self) -> str:
        ready = self.logged("registry.ready")
        return str(ready[0]["replica"]) if ready else ""

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


class Watch:
    """Every registry event, as a real subscriber sees it."""

    def __init__(self) -> None:
        self.events: list[InstanceEvent] = []

    async def on_msg(self, msg: Any) -> None:
        self.events.append(msgspec.json.decode(msg.data, type=InstanceEvent))

    def of(self, *kinds: str) -> list[InstanceEvent]:
        return [e for e in self.events if e.kind in kinds]

    def check_once_in_order(self) -> None:
        """No copy of any event, and per epoch a sequence with no hole."""
        keys = [(e.epoch, e.seq) for e in self.events]
        assert len(keys) == len(set(keys)), "an event was published twice"
        changes = [(e.epoch, e.kind, e.instance.instance_id) for e in self.of("registered")]
        assert len(changes) == len(set(changes)), "a registration was announced twice"
        by_epoch: dict[str, list[int]] = collections.defaultdict(list)
        for e in self.events:
            by_epoch[e.epoch].append(e.seq)
        for epoch, seqs in by_epoch.items():
            assert seqs == sorted(seqs), f"epoch {epoch}: out of order"
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"epoch {epoch}: gap"


class Fleet:
    """Instances that heartbeat as the SDK does (request, register again on 404)."""

    def __init__(self, nc: Client, size: int) -> None:
        self.nc = nc
        self.ids = [f"i{n:03}" for n in range(size)]  # the beat loop picks up additions
        self.answers: collections.Counter[str] = collections.Counter()
        self.last_ok: dict[str, float] = {}
        self.longest_gap = 0.0
        self._task: asyncio.Task[None] | None = None

    async def register_all(self) -> None:
        for iid in self.ids:
            body = msgspec.json.encode({"instance_id": iid, "host": "127.0.0.1", "port": 8000,
                                        "ttl_s": TTL})  # fmt: skip
            await self.nc.request(subjects.register(SVC), body, timeout=2)
            self.last_ok[iid] = time.monotonic()

    async def _beat(self, iid: str) -> None:
        body = msgspec.json.encode({"instance_id": iid})
        try:
            reply = await self.nc.request(subjects.heartbeat(SVC), body, timeout=0.5)
        except nats.errors.Error:
            self.answers["unanswered"] += 1
            return
        code = (reply.headers or {}).get(ERROR_CODE_HEADER, "200")
        self.answers[code] += 1
        if code == "200":
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - self.last_ok.get(iid, now))
            self.last_ok[iid] = now

    async def _run(self) -> None:
        while True:
            await asyncio.gather(*(self._beat(iid) for iid in self.ids))
            await asyncio.sleep(TTL / 5)  # the heartbeat interval, as an SDK keeps it

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()


@pytest.fixture
async def client(nats_cluster: NatsCluster) -> AsyncIterator[Client]:
    nc = await nats.connect(servers=nats_cluster.urls, max_reconnect_attempts=-1,
                            reconnect_time_wait=0.1)  # fmt: skip
    yield nc
    await nc.close()


@pytest.fixture
async def watch(client: Client) -> AsyncIterator[Watch]:
    w = Watch()
    sub = await client.subscribe(subjects.every(subjects.EVENTS), cb=w.on_msg)
    await subscribed(client)
    yield w
    await sub.unsubscribe()


async def leader_of(nc: Client) -> str:
    try:
        reply = await nc.request(subjects.REPLICA_LEADER, b"{}", timeout=0.5)
    except nats.errors.Error:
        return ""
    return msgspec.json.decode(reply.data, type=ReplicaStatus).replica


async def listed(nc: Client) -> set[str]:
    try:
        reply = await nc.request(subjects.instances(SVC), b"{}", timeout=1)
        found = msgspec.json.decode(reply.data, type=InstanceList)
    except (nats.errors.Error, msgspec.ValidationError):
        return set()
    return {i.instance_id for i in found.instances if i.healthy}


def start(nats_cluster: NatsCluster, tmp_path: Path, replicas: list[Replica], n: int) -> None:
    for _ in range(n):
        # each replica names the nodes in its own order: they spread over the cluster
        urls = nats_cluster.urls[len(replicas) % 3 :] + nats_cluster.urls[: len(replicas) % 3]
        replicas.append(Replica(",".join(urls), tmp_path / f"registry-{len(replicas)}.log"))


async def test_killing_the_leader_then_a_follower_loses_nothing_and_says_nothing_false(
    nats_cluster: NatsCluster, tmp_path: Path, replicas: list[Replica], client: Client,
    watch: Watch,
) -> None:  # fmt: skip
    start(nats_cluster, tmp_path, replicas, 3)
    await until(lambda: all(r.id for r in replicas), timeout=15)
    await until(lambda: _has_leader(client), timeout=15)
    fleet = Fleet(client, 30)
    await fleet.register_all()
    fleet.start()
    try:
        await until(lambda: len(watch.of("registered")) == 30, timeout=15)
        for victim_role in ("leader", "follower"):
            leader = await leader_of(client)
            alive = [r for r in replicas if r.proc.poll() is None]
            victim = next(r for r in alive if (r.id == leader) == (victim_role == "leader"))
            before = len(watch.events)
            fleet.longest_gap = 0.0
            victim.kill()
            # registrations while the dead leader's lease runs out: a follower answers,
            # and the next leader announces each of them once
            newcomers = [f"{victim_role}-{n}" for n in range(5)]
            for iid in newcomers:
                await _register(client, iid)
            fleet.ids += newcomers
            gone, beats = victim.id, sum(fleet.answers.values())
            await until(lambda: _has_leader(client, not_=gone), timeout=15)  # noqa: B023  # awaited here
            await until(lambda: len(watch.events) == before + 5, timeout=15)  # noqa: B023
            await until(lambda: sum(fleet.answers.values()) >= beats + 3 * 35, timeout=15)  # noqa: B023
            assert await listed(client) == set(fleet.ids), victim_role
            assert not watch.of(*FAKE)
            # the newcomers, once each; nothing else changed, so nothing else was said
            assert sorted(e.instance.instance_id for e in watch.events[before:]) == newcomers
        assert fleet.answers["404"] == 0  # no replica forgot a lease
        assert fleet.answers["503"] == fleet.answers["500"] == 0
        # the survivor continued the killed leader's sequence, in the same epoch
        events = [e for e in watch.events if e.kind == "registered"]
        assert len({e.epoch for e in events}) == 1
        watch.check_once_in_order()
    finally:
        await fleet.stop()


async def _register(nc: Client, iid: str) -> None:
    """Register as the SDK does: again until answered (the answer may take a moment)."""
    body = msgspec.json.encode(
        {"instance_id": iid, "host": "127.0.0.1", "port": 8000, "ttl_s": TTL}
    )
    for _ in range(20):
        try:
            reply = await nc.request(subjects.register(SVC), body, timeout=0.5)
        except nats.errors.Error:
            continue
        assert (reply.headers or {}).get(ERROR_CODE_HEADER) is None, reply.headers
        return
    msg = f"registration of {iid} never answered"
    raise AssertionError(msg)


async def _has_leader(nc: Client, not_: str = "") -> bool:
    leader = await leader_of(nc)
    return bool(leader) and leader != not_


async def test_a_late_replica_catches_up_before_it_answers_and_can_take_over(
    nats_cluster: NatsCluster, tmp_path: Path, replicas: list[Replica], client: Client,
    watch: Watch,
) -> None:  # fmt: skip
    start(nats_cluster, tmp_path, replicas, 1)
    first = replicas[0]
    await until(lambda: _has_leader(client), timeout=15)
    fleet = Fleet(client, 40)
    await fleet.register_all()
    fleet.start()
    try:
        start(nats_cluster, tmp_path, replicas, 1)
        late = replicas[1]
        await until(lambda: bool(late.logged("registry.caught_up")), timeout=15)
        caught = late.logged("registry.caught_up")[0]
        assert caught["taken"] == 40  # the whole table, from the peer
        assert caught["epoch"] == watch.events[0].epoch
        first.kill()
        await until(lambda: _has_leader(client, not_=first.id), timeout=15)
        assert await leader_of(client) == late.id
        beats = sum(fleet.answers.values())
        await until(lambda: sum(fleet.answers.values()) >= beats + 2 * 40, timeout=15)
        assert fleet.answers["404"] == 0  # it held every lease when it took over
        assert await listed(client) == set(fleet.ids)
        assert not watch.of(*FAKE)
        assert len(watch.of("registered")) == 40  # nobody registered again
        watch.check_once_in_order()
    finally:
        await fleet.stop()


async def test_a_full_restart_of_every_replica_recovers_the_fleet_through_the_sdk(
    nats_cluster: NatsCluster, tmp_path: Path, replicas: list[Replica], client: Client,
    watch: Watch,
) -> None:  # fmt: skip
    start(nats_cluster, tmp_path, replicas, 2)
    await until(lambda: _has_leader(client), timeout=15)
    async with contextlib.AsyncExitStack() as stack:
        ids = [f"sdk{n}" for n in range(12)]
        for iid in ids:
            await stack.enter_async_context(
                ServiceAgent(client, SVC, instance_id=iid, host="127.0.0.1", port=9000, ttl_s=TTL)
            )
        await until(lambda: len(watch.of("registered")) == len(ids), timeout=15)
        old_epoch = watch.events[0].epoch
        for replica in replicas:
            replica.kill()
        start(nats_cluster, tmp_path, replicas, 2)
        # the SDK's next heartbeat is answered 404 and it registers again
        await until(lambda: _listed_all(client, ids), timeout=15)
        await until(lambda: _has_leader(client), timeout=15)
        await until(lambda: {e.instance.instance_id for e in watch.events
                             if e.epoch != old_epoch} >= set(ids), timeout=15)  # fmt: skip
        assert not watch.of(*FAKE)  # a restart is no reason to expire anybody
        new_epochs = {e.epoch for e in watch.events} - {old_epoch}
        assert len(new_epochs) == 1  # readers see one restart, not one per replica
        watch.check_once_in_order()


async def _listed_all(nc: Client, ids: list[str]) -> bool:
    return await listed(nc) == set(ids)


async def test_time_a_replica_is_cut_off_from_nats_expires_nobody(
    nats_server: NatsServer, tmp_path: Path, replicas: list[Replica]
) -> None:
    """The registry's own link drops for longer than the leases: that is not the fleet's
    silence. The gap is credited, as a stall is; nobody turns unhealthy or expires."""
    replicas.append(Replica(nats_server.url, tmp_path / "registry.log"))
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    watch = Watch()
    await nc.subscribe(subjects.every(subjects.EVENTS), cb=watch.on_msg)
    try:
        await until(lambda: _has_leader(nc), timeout=15)
        fleet = Fleet(nc, 12)
        await fleet.register_all()
        fleet.start()
        await until(lambda: len(watch.of("registered")) == 12, timeout=15)
        nats_server.kill()
        await asyncio.sleep(2.5 * TTL)  # the outage itself: longer than expiry (2 x TTL)
        nats_server.start()
        await until(lambda: _has_leader(nc), timeout=15)
        beats = fleet.answers["200"]
        await until(lambda: fleet.answers["200"] >= beats + 3 * 12, timeout=15)
        await fleet.stop()
        assert bool(replicas[0].logged("registry.resumed"))  # it knew it had been away
        assert not watch.of(*FAKE)
        assert fleet.answers["404"] == 0
        assert await listed(nc) == set(fleet.ids)
    finally:
        await nc.close()


async def test_a_registration_storm_after_a_full_restart_is_answered_whole(
    nats_cluster: NatsCluster, tmp_path: Path, replicas: list[Replica], client: Client,
    watch: Watch,
) -> None:  # fmt: skip
    """1,500 instances register at once, right after every replica was SIGKILLed (the
    dead leader's lease still runs): each is answered, none 5xx, each announced once."""
    start(nats_cluster, tmp_path, replicas, 2)
    await until(lambda: _has_leader(client), timeout=15)
    for replica in replicas:
        replica.kill()
    start(nats_cluster, tmp_path, replicas, 2)
    codes: collections.Counter[str] = collections.Counter()
    slots = asyncio.Semaphore(500)

    async def register(n: int) -> None:
        body = msgspec.json.encode({"instance_id": f"s{n:04}", "host": "10.0.0.1", "port": 80})
        async with slots:
            for _ in range(20):  # as the SDK does: again until answered
                try:
                    reply = await client.request(subjects.register(f"svc{n % 10}"), body, 2)
                except nats.errors.Error:
                    codes["retried"] += 1
                    await asyncio.sleep(0.05)
                    continue
                codes[(reply.headers or {}).get(ERROR_CODE_HEADER, "200")] += 1
                return
            codes["lost"] += 1

    await asyncio.gather(*(register(n) for n in range(1500)))
    assert codes["200"] == 1500, codes
    assert codes["lost"] == 0
    assert not [code for code in codes if code.startswith("5")]
    try:
        await until(lambda: len(watch.of("registered")) >= 1500, timeout=30)
    except AssertionError:
        logs = {r.id: [e["event"] for e in r.lines() if "leader" in e["event"]] for r in replicas}
        pytest.fail(f"{len(watch.of('registered'))} of 1500 announced; {logs}")
    announced = collections.Counter(e.instance.instance_id for e in watch.of("registered"))
    assert len(announced) == 1500
    assert set(announced.values()) == {1}  # once each, by whichever replica won the lease
    watch.check_once_in_order()


async def test_a_leader_paused_past_its_lease_comes_back_silent_and_agrees(
    nats_cluster: NatsCluster, tmp_path: Path, replicas: list[Replica], client: Client,
    watch: Watch,
) -> None:  # fmt: skip
    """SIGSTOP the leader for longer than its lease (a stall, or a cut it cannot see):
    another takes over; one instance really dies meanwhile. Resumed, the old leader says
    nothing (no copy, no stale sweep), catches up, and holds what the fleet holds."""
    start(nats_cluster, tmp_path, replicas, 3)
    await until(lambda: all(r.id for r in replicas), timeout=15)  # all three caught up and serving
    await until(lambda: _has_leader(client), timeout=15)
    fleet = Fleet(client, 10)
    fleet.ids.append("dying")
    await fleet.register_all()
    fleet.start()
    try:
        await until(lambda: len(watch.of("registered")) == 11, timeout=15)
        leader = await leader_of(client)
        old = next(r for r in replicas if r.id == leader)
        old.proc.send_signal(signal.SIGSTOP)
        try:
            await until(lambda: _has_leader(client, not_=old.id), timeout=15)
            fleet.ids.remove("dying")  # it stops heartbeating: a real death
            await until(lambda: bool(watch.of("expired")), timeout=15)
        finally:
            old.proc.send_signal(signal.SIGCONT)
        await until(lambda: len(old.logged("registry.caught_up")) == 2, timeout=15)
        beats = sum(fleet.answers.values())
        await until(lambda: sum(fleet.answers.values()) >= beats + 3 * 10, timeout=15)
        assert [(e.kind, e.instance.instance_id) for e in watch.of(*FAKE)] == [
            ("unhealthy", "dying"),
            ("expired", "dying"),
        ]
        assert old.logged("registry.caught_up")[1]["leases"] == 10  # agrees again
        assert await leader_of(client) != old.id  # it did not take the lease back by force
        watch.check_once_in_order()
    finally:
        await fleet.stop()
