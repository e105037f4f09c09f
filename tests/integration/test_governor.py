"""Governance through the public subjects: changes are validated, versioned, durable,
audited, can be rolled back, and the fleet obeys them at once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from conftest import Events, reg
from natsserver import NatsServer
from waiting import until
from workers import run_balancer, run_governor, run_registry

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.errors import ERROR_CODE_HEADER, ERROR_HEADER
from schemas.governor import (
    ConfigApplied,
    ConfigChange,
    ConfigHistory,
    HistoryQuery,
    OverridePatch,
    Rollback,
    ServiceConfig,
)
from schemas.registry import Ack, Empty, Heartbeat, InstanceList
from services.errors import BadRequest, Conflict, NotFound

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client

    from services.bus import Bus


async def change(bus: Bus, service: str = "api", **kw: Any) -> ConfigApplied:
    kw.setdefault("actor", "ann")
    return await bus.request(subjects.change(service), ConfigChange(**kw), ConfigApplied)


async def config(bus: Bus, service: str = "api") -> ServiceConfig:
    return await bus.request(subjects.config(service), Empty(), ServiceConfig)


async def history(bus: Bus, service: str = "api", **query: Any) -> ConfigHistory:
    return await bus.request(subjects.history(service), HistoryQuery(**query), ConfigHistory)


async def resolve(bus: Bus, **kw: Any) -> Endpoint:
    return await bus.request(subjects.resolve("api"), ResolveRequest(**kw), Endpoint)


def member(balancer: Any, iid: str) -> Any:
    """The balancer's view of instance `iid` of `api` (None until it has one)."""
    pool = balancer.pools.get("api")
    return pool.members.get(iid) if pool else None


# -- the governor's own subjects -------------------------------------------------------
@pytest.mark.usefixtures("governor")
async def test_a_never_configured_service_is_revision_0_with_defaults(bus: Bus) -> None:
    cfg = await config(bus, "fresh")
    assert (cfg.service, cfg.revision, cfg.strategy, cfg.protect_threshold) == (
        "fresh",
        0,
        "weighted",
        0.0,
    )
    assert cfg.instances == {}
    history = await bus.request(subjects.history("fresh"), Empty(), ConfigHistory)
    assert history.entries == []


@pytest.mark.usefixtures("governor")
async def test_changes_are_versioned_merged_announced_and_audited(nc: Client, bus: Bus) -> None:
    applied: list[ConfigApplied] = []

    async def on_applied(msg: Any) -> None:
        applied.append(msgspec.json.decode(msg.data, type=ConfigApplied))

    await nc.subscribe(subjects.every(subjects.APPLIED), cb=on_applied)
    first = await change(
        bus,
        strategy="round_robin",
        reason="canary",
        instances={"i1": OverridePatch(weight=5, drained=True)},
    )
    second = await change(
        bus,
        actor="bob",
        protect_threshold=0.4,
        instances={"i1": OverridePatch(weight=None), "i2": OverridePatch(port=9)},
    )
    assert (first.revision, second.revision) == (1, 2)
    cfg = await config(bus)
    assert cfg.revision == 2
    assert cfg.strategy == "round_robin"  # untouched by the second change
    assert cfg.protect_threshold == 0.4
    assert cfg.instances["i1"].weight is None  # null removed that override...
    assert cfg.instances["i1"].drained is True  # ...and kept the rest
    assert cfg.instances["i2"].port == 9
    history = await bus.request(subjects.history("api"), Empty(), ConfigHistory)
    assert [(e.revision, e.actor, e.reason) for e in history.entries] == [
        (1, "ann", "canary"),
        (2, "bob", ""),
    ]
    assert history.entries[0].at <= history.entries[1].at
    await until(lambda: len(applied) == 2)
    assert [a.revision for a in applied] == [1, 2]


@pytest.mark.usefixtures("governor")
async def test_history_reads_a_range_of_revisions(bus: Bus) -> None:
    for n in range(1, 8):
        await change(bus, reason=f"r{n}", protect_threshold=n / 10)
        await change(bus, "other", reason=f"o{n}", warmup_s=n)  # in the same log, never listed
    middle = (await history(bus)).entries[3].at

    async def revisions(**query: Any) -> list[int]:
        return [e.revision for e in (await history(bus, **query)).entries]

    assert await revisions() == [1, 2, 3, 4, 5, 6, 7]
    assert await revisions(limit=3) == [5, 6, 7]
    assert await revisions(since_revision=6) == [6, 7]
    assert await revisions(since_revision=2, limit=2) == [6, 7]
    assert await revisions(since=middle) == [4, 5, 6, 7]
    assert await revisions(since=middle + dt.timedelta(days=1)) == []
    assert await revisions(since_revision=99) == []
    assert [e.reason for e in (await history(bus, "other", limit=1)).entries] == ["o7"]
    with pytest.raises(BadRequest, match=r"limit must be an integer 0\.\.100000"):
        await history(bus, limit=-1)


@pytest.mark.usefixtures("governor")
async def test_null_instance_drops_all_its_overrides(bus: Bus) -> None:
    await change(bus, instances={"i1": OverridePatch(weight=5, drained=True)})
    await change(bus, instances={"i1": None})
    assert (await config(bus)).instances == {}


@pytest.mark.usefixtures("governor")
async def test_rollback_applies_an_old_revision_as_a_new_one(bus: Bus) -> None:
    await change(bus, strategy="random")
    await change(bus, strategy="least_connections", protect_threshold=0.5)
    back = await bus.request(
        subjects.rollback("api"), Rollback(actor="ops", to_revision=1, reason="bad"), ConfigApplied
    )
    assert back.revision == 3
    assert (back.kind, back.restored) == ("rollback", 1)
    cfg = await config(bus)
    assert (cfg.revision, cfg.strategy, cfg.protect_threshold) == (3, "random", 0.0)
    to_defaults = await bus.request(
        subjects.rollback("api"), Rollback(actor="ops", to_revision=0), ConfigApplied
    )
    assert to_defaults.config.strategy == "weighted"


@pytest.mark.parametrize(
    ("subject", "payload", "says"),
    [
        (
            "governor.v1.change.api",
            b'{"actor":"a","strategy":"fastest"}',
            "unknown strategy 'fastest'; use one of random",
        ),
        (
            "governor.v1.change.api",
            b'{"actor":"a","protect_threshold":1.5}',
            "protect_threshold must be a number 0..1, got 1.5",
        ),
        (
            "governor.v1.change.api",
            b'{"actor":"a","instances":{"i1":{"weight":-1}}}',
            "weight must be an integer 0..10000",
        ),
        (
            "governor.v1.change.api",
            b'{"actor":"a","instances":{"i1":{"port":70000}}}',
            "port must be 1..65535, got 70000",
        ),
        (
            "governor.v1.change.api",
            b'{"actor":"a","instances":{"bad id":{"port":1}}}',
            "instances must be an object of instance id",
        ),
        ("governor.v1.change.api", b'{"strategy":"random"}', "actor is required"),
        ("governor.v1.change.api", b'{"actor":"a","strategy":', "payload is not valid JSON"),
        ("governor.v1.change.api", b'{"actor":"a"}', "the change sets nothing"),
        (
            "governor.v1.change.api",
            b'{"actor":"a","delete":true,"strategy":"random"}',
            "delete stands alone",
        ),
        (
            "governor.v1.rollback.never",
            b'{"actor":"a","to_revision":1}',
            "service 'never' has no configuration to roll back",
        ),
        (
            "governor.v1.rollback.api",
            b'{"actor":"a","to_revision":99}',
            "service 'api' has no revision 99",
        ),
        ("governor.v1.rollback.api", b'{"to_revision":1}', "actor is required"),
    ],
)
@pytest.mark.usefixtures("governor")
async def test_invalid_changes_are_400_and_change_nothing(
    nc: Client, bus: Bus, subject: str, payload: bytes, says: str
) -> None:
    await change(bus, strategy="random")
    msg = await nc.request(subject, payload, timeout=2)
    assert msg.headers is not None
    assert msg.headers[ERROR_CODE_HEADER] == "400"
    assert says in msg.headers[ERROR_HEADER]
    cfg = await config(bus)
    assert (cfg.revision, cfg.strategy) == (1, "random")


async def test_concurrent_changes_on_one_revision_exactly_one_wins(
    nats_server: NatsServer, bus: Bus
) -> None:
    async with run_governor(nats_server.url), run_governor(nats_server.url):  # two replicas
        await change(bus, strategy="random")
        results = await asyncio.gather(
            *(change(bus, actor=f"op{i}", warmup_s=i, expected_revision=1) for i in range(12)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, ConfigApplied)]
        assert len(winners) == 1
        assert all(isinstance(r, Conflict) for r in results if r not in winners)
        assert (await config(bus)).revision == 2


async def test_concurrent_changes_without_a_revision_all_land(
    nats_server: NatsServer, bus: Bus
) -> None:
    async with run_governor(nats_server.url), run_governor(nats_server.url):
        results = await asyncio.gather(
            *(
                change(bus, actor=f"op{i}", instances={f"i{i}": OverridePatch(weight=i)})
                for i in range(12)
            )
        )
        assert sorted(r.revision for r in results) == list(range(1, 13))
        cfg = await config(bus)
        assert {iid: o.weight for iid, o in cfg.instances.items()} == {
            f"i{i}": i for i in range(12)
        }  # no change was lost to a concurrent one


async def test_config_survives_a_restart_of_every_worker_and_of_nats(
    nats_server: NatsServer, bus: Bus
) -> None:
    async with run_governor(nats_server.url):
        await change(bus, strategy="least_connections", instances={"i1": OverridePatch(port=81)})
        await change(bus, protect_threshold=0.25, reason="storm")
    nats_server.kill()  # SIGKILL, right after the acknowledgements
    nats_server.start()
    await until(lambda: bus.nc.is_connected, timeout=10)  # the client reconnects by itself
    async with run_governor(nats_server.url):
        cfg = await config(bus)
        assert (cfg.revision, cfg.strategy, cfg.protect_threshold) == (2, "least_connections", 0.25)
        assert cfg.instances["i1"].port == 81
        history = await bus.request(subjects.history("api"), Empty(), ConfigHistory)
        assert [e.reason for e in history.entries] == ["", "storm"]


async def test_governor_waits_for_jetstream_instead_of_dying(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nojs", jetstream=False).start()  # no JetStream

    async def run() -> None:
        async with run_governor(server.url):
            pass

    task = asyncio.create_task(run())
    try:
        await asyncio.sleep(0.5)  # a short wait for what must NOT happen: the governor ending
        assert not task.done()  # still waiting for JetStream: not crashed, not serving
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.stop()


# -- the fleet obeys -----------------------------------------------------------------
@pytest.fixture
async def fleet(
    nats_server: NatsServer, governor: Any, registry: Any, balancer: Any, bus: Bus, events: Events
) -> Events:
    for iid, port in (("a", 8001), ("b", 8002)):
        await bus.request(subjects.register("api"), reg(iid, port), Ack)
        await events.wait_for("registered", iid)
    pools = balancer.pools
    await until(lambda: "api" in pools and len(pools["api"].members) == 2)
    return events


async def picks(bus: Bus, n: int = 8, **kw: Any) -> list[str]:
    return [(await resolve(bus, **kw)).instance_id for _ in range(n)]


async def test_strategy_change_is_obeyed_at_once(bus: Bus, fleet: Events) -> None:
    assert (await resolve(bus)).strategy == "weighted"
    await change(bus, strategy="least_connections")

    async def obeyed() -> bool:
        return (await resolve(bus)).strategy == "least_connections"

    await until(obeyed, timeout=1.0)


async def test_weight_port_and_metadata_overrides_show_everywhere_and_outlive_reregistration(
    bus: Bus, fleet: Events, balancer: Any
) -> None:
    await change(
        bus,
        instances={
            "a": OverridePatch(weight=0),
            "b": OverridePatch(port=9090, metadata={"canary": "yes"}),
        },
    )

    async def applied() -> bool:
        listed = await bus.request(subjects.instances("api"), Empty(), InstanceList)
        by_id = {i.instance_id: i for i in listed.instances}
        return by_id["a"].weight == 0 and by_id["b"].port == 9090

    await until(applied)
    # the balancer applies the same `updated` events
    await until(lambda: member(balancer, "a").weight == 0 and member(balancer, "b").port == 9090)
    for ep in [await resolve(bus) for _ in range(6)]:
        assert (ep.instance_id, ep.port, ep.metadata) == ("b", 9090, {"canary": "yes"})
    await bus.request(subjects.register("api"), reg("b", 8002), Ack)  # b registers again
    listed = await bus.request(subjects.instances("api"), Empty(), InstanceList)
    b = next(i for i in listed.instances if i.instance_id == "b")
    assert (b.port, b.metadata) == (9090, {"canary": "yes"})


async def test_drain_stops_new_traffic_and_says_when_it_is_safe(
    bus: Bus, fleet: Events, balancer: Any
) -> None:
    await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id="a", inflight=3), Ack)
    await change(bus, instances={"a": OverridePatch(drained=True)})
    await fleet.wait_for("updated", "a")
    await until(lambda: member(balancer, "a").drained)  # the balancer applies it too
    assert set(await picks(bus, strategy="round_robin")) == {"b"}
    await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id="a", inflight=1), Ack)
    assert "drained" not in fleet.kinds("a")  # still serving its last requests
    await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id="a", inflight=0), Ack)
    event = await fleet.wait_for("drained", "a")
    assert event.instance.drained
    await change(bus, instances={"a": OverridePatch(drained=None)})  # undrain
    await until(lambda: _has_a(bus))  # traffic returns


async def _has_a(bus: Bus) -> bool:
    return "a" in await picks(bus, 4, strategy="round_robin")


async def test_protect_threshold_panics_honestly(bus: Bus, fleet: Events, balancer: Any) -> None:
    await change(bus, protect_threshold=0.5)
    await bus.request(subjects.register("api"), reg("a", 8001, ttl_s=1), Ack)  # a falls silent
    await fleet.wait_for("unhealthy", "a", timeout=3)
    await until(lambda: not member(balancer, "a").healthy)  # the balancer applies it too
    eps = [await resolve(bus, strategy="round_robin") for _ in range(4)]
    assert {e.instance_id for e in eps} == {"a", "b"}  # half healthy <= 0.5: both, honestly
    assert all(e.panic for e in eps)
    await change(bus, protect_threshold=0.0)

    async def calm() -> bool:
        ep = await resolve(bus, strategy="round_robin")
        return not ep.panic

    await until(calm)
    assert set(await picks(bus, strategy="round_robin")) == {"b"}


async def test_delete_forgets_the_config_and_deregisters_the_instances(
    bus: Bus, fleet: Events, balancer: Any
) -> None:
    await change(bus, strategy="random")
    done = await change(bus, delete=True, reason="decommissioned")
    assert done.kind == "delete"
    await fleet.wait_for("deregistered", "a")
    await fleet.wait_for("deregistered", "b")
    cfg = await config(bus)
    assert (cfg.revision, cfg.strategy) == (2, "weighted")  # the delete is revision 2
    await until(lambda: "api" not in balancer.pools)  # the balancer applies the same events
    with pytest.raises(NotFound):  # the balancer forgot them too
        await resolve(bus)


async def test_workers_restarted_obey_the_stored_config(
    nats_server: NatsServer, bus: Bus, events: Events
) -> None:
    async with run_governor(nats_server.url):
        await change(bus, strategy="round_robin", instances={"a": OverridePatch(port=7000)})
    async with run_registry(nats_server.url) as registry, run_balancer(nats_server.url) as bal:
        assert registry.configs["api"].revision == 1  # loaded before serving
        await bus.request(subjects.register("api"), reg("a", 8001), Ack)
        await events.wait_for("registered", "a")
        assert events.seen[-1].instance.port == 7000
        await until(lambda: "api" in bal.pools)
        ep = await resolve(bus)
        assert (ep.strategy, ep.port) == ("round_robin", 7000)
