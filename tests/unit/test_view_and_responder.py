"""The registry view's index and the DNS responder's rules, fed directly (no NATS traffic).

The view is the gateway's own RegistryView on a nats-py client that never connects: the
sync and the config watch are not started, the Fleet methods are called as the sync would.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import msgspec
import pytest
from builders import instance
from nats.aio.client import Client

from schemas.balancer import Ejection, OutlierState
from schemas.governor import ConfigApplied, OutlierConfig, ServiceConfig
from services import logs
from services.bus import Bus
from services.gateway.dns.names import instance_label
from services.gateway.dns.responder import Responder
from services.view import RegistryView
from services.view.ejections import ejected, next_end
from services.view.rules import WARMUP_STEPS, in_panic, warm_weight

if TYPE_CHECKING:
    from schemas.registry import Instance

LOG = logs.get_logger("test")


class Wall:
    """A wall clock the test moves (ejections end at Unix times)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def view(*, loaded: bool = True, wall: Wall | None = None) -> RegistryView:
    v = RegistryView(Bus(Client(), LOG), LOG, wallclock=wall or Wall())
    v.sync.snapshots = int(loaded)  # as the sync counts its first snapshot
    return v


def with_(inst: Instance, **changes: Any) -> Instance:
    return msgspec.structs.replace(inst, **changes)


# -- rules ---------------------------------------------------------------------------------
def test_warm_weight_ramps_in_steps_and_ends_full() -> None:
    assert warm_weight(100, 0.0, 10.0) == (10, 1.0)
    assert warm_weight(100, 4.5, 10.0) == (50, 5.0)
    assert warm_weight(100, 10.0, 10.0)[0] == 100
    assert warm_weight(3, 0.0, 10.0)[0] == 1  # never 0 while warming
    assert warm_weight(100, 1.0, 0.0)[0] == 100  # no warm-up
    steps = {warm_weight(100, t / 10, 10.0)[0] for t in range(100)}
    assert len(steps) == WARMUP_STEPS


def test_panic_at_or_below_the_threshold() -> None:
    assert in_panic(1, 3, 0.5)
    assert not in_panic(2, 3, 0.5)
    assert not in_panic(0, 3, 0.0)  # 0 = never
    assert not in_panic(0, 0, 0.5)


def outliers(**until: float) -> OutlierState:
    """A stored ejection state: instance id -> until (Unix seconds)."""
    return OutlierState(
        ejected={
            iid: Ejection(since=t - 30, until=t, reason=f"{iid} failed", times=1)
            for iid, t in until.items()
        },
        held={"held-by-the-cap": 999_999.0},
    )


def test_who_is_ejected_is_what_the_records_say_until_their_end() -> None:
    state = outliers(a=100.0, b=200.0)
    assert ejected(state, 99.0) == {"a", "b"}
    assert ejected(state, 100.0) == {"b"}  # over at its until, returned or not
    assert ejected(state, 150.0, enabled=False) == set()  # ejection off: everyone back
    assert "held-by-the-cap" not in ejected(state, 0.0)  # the cap keeps it serving
    assert next_end(state, 50.0) == 100.0
    assert next_end(state, 100.0) == 200.0
    assert next_end(state, 200.0) == float("inf")


# -- the view ------------------------------------------------------------------------------
async def test_ejections_leave_serving_move_the_index_and_end_on_time() -> None:
    wall = Wall()
    v = view(wall=wall)
    for iid in ("a", "b", "c"):
        v.upsert("api", instance(iid))
    before = v.service_index("api")
    v.take_outliers("api", outliers(b=wall.now + 30), seq=5)
    state = v.services["api"]
    assert [i.instance_id for i in state.serving()[0]] == ["a", "c"]
    assert state.ejection("b") is not None
    assert state.ejection("a") is None
    assert v.service_index("api") > before  # blocking queries wake
    moved = v.service_index("api")
    v.take_outliers("api", outliers(b=wall.now + 90), seq=4)  # older than what it has
    assert state.ejection("b").until == wall.now + 30  # type: ignore[union-attr]
    v.take_outliers("other", outliers(x=wall.now + 30), seq=6)  # no such service yet
    assert v.service_index("api") == moved
    v.upsert("other", instance("x"))  # it arrives ejected
    v.upsert("other", instance("y"))
    assert [i.instance_id for i in v.services["other"].serving()[0]] == ["y"]
    # in panic the unhealthy serve, the ejected still not (the balancer picks none either)
    await configure(v, ServiceConfig(service="api", protect_threshold=0.9))
    v.upsert("api", with_(instance("c"), healthy=False))
    serving, panic = state.serving()
    assert panic
    assert [i.instance_id for i in serving] == ["a", "c"]
    # switched off: everyone is back at once; on again: the record still holds
    off = OutlierConfig(enabled=False)
    await configure(v, ServiceConfig(service="api", protect_threshold=0.9, outlier=off))
    assert [i.instance_id for i in state.serving()[0]] == ["a", "b", "c"]
    await configure(v, ServiceConfig(service="api", protect_threshold=0.9))
    assert state.ejection("b") is not None
    # the ejection ends at its until though no return was ever stored
    task = asyncio.create_task(v._end_ejections())
    try:
        at = v.service_index("api")
        wall.now += 30
        v._ends.set()  # the clock jumped: as the timer would wake at the until
        await asyncio.wait_for(v.wait(at, 5, "api"), 5)
        assert state.ejection("b") is None
        assert [i.instance_id for i in state.serving()[0]] == ["a", "b", "c"]
    finally:
        task.cancel()


async def test_index_moves_with_visible_changes_only() -> None:
    v = view()
    assert v.index == 1
    a = instance("a")
    v.upsert("api", a)
    first = v.index
    assert first > 1
    assert v.service_index("api") == first
    v.upsert("api", with_(a, inflight=7, last_seen=a.last_seen + timedelta(seconds=1)))
    assert v.index == first  # load and heartbeat times are no change
    v.upsert("api", with_(a, healthy=False))
    assert v.index == first + 1
    v.upsert("other", instance("x"))
    assert v.service_index("api") == first + 1  # another service's change is not api's
    v.remove("api", "a")
    gone = v.service_index("api")
    assert gone == v.index
    assert "api" not in v.services
    v.remove("api", "a")  # twice: nothing
    assert v.service_index("api") == gone
    assert v.service_index("never") == 1


async def test_config_applies_and_moves_the_index() -> None:
    v = view()
    v.upsert("api", instance("a", weight=100))
    before = v.service_index("api")
    await configure(v, ServiceConfig(service="api", strategy="round_robin", warmup_s=60))
    state = v.services["api"]
    assert state.config.strategy == "round_robin"
    assert v.service_index("api") > before
    young = with_(instance("b"), registered_at=datetime.now(UTC))
    assert state.weight(young) < 100  # warming up


async def test_wait_wakes_on_a_change_and_times_out_without() -> None:
    v = view()
    assert await v.wait(v.index, 0.01) == v.index
    waiter = asyncio.create_task(v.wait(v.index, 30))
    await asyncio.sleep(0)
    v.upsert("api", instance("a"))
    assert await asyncio.wait_for(waiter, 1) == v.index


# -- the responder ---------------------------------------------------------------------------
class Fixed:
    """The balancer's pick, as a function: whatever `first` says."""

    def __init__(self) -> None:
        self.first: str | None = None
        self.asked: list[tuple[str, str]] = []
        self.excluded: tuple[str, ...] = ()
        self.key: str | None = None

    async def __call__(
        self, service: str, zone: str, exclude: tuple[str, ...], key: str | None
    ) -> str | None:
        self.asked.append((service, zone))
        self.excluded = exclude
        self.key = key
        return self.first


@pytest.fixture
def dns_view() -> tuple[RegistryView, Responder, Fixed]:
    v = view()
    pick = Fixed()
    return v, Responder(v, pick, LOG, domain="baton", ttl=0), pick


async def ask(
    r: Responder, name: str, rdtype: str = "A", *, tcp: bool = False, client: str = ""
) -> Any:
    q = dns.message.make_query(name, rdtype)
    wire = await r.respond(q.to_wire(), tcp=tcp, client=client)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == q.id
    return reply


async def test_pick_first_and_answers_follow_the_view(dns_view: Any) -> None:
    v, r, pick = dns_view
    for iid, port in (("a", 1), ("b", 2), ("c", 3)):
        v.upsert("Web", with_(instance(iid), port=port))
    pick.first = "c"
    reply = await ask(r, "web.service.baton", "SRV")  # DNS is case-blind; Baton is not
    assert [x.port for x in reply.answer[0]] == [3, 1, 2]
    assert pick.asked == [("Web", "")]
    pick.first = "b"
    reply = await ask(r, "WEB.service.baton", "SRV")
    assert [x.port for x in reply.answer[0]] == [2, 1, 3]
    v.upsert("Web", with_(instance("d"), port=4))  # the cached answers go with the change
    reply = await ask(r, "web.service.baton", "SRV")
    assert [x.port for x in reply.answer[0]] == [2, 1, 3, 4]
    v.upsert("Web", with_(instance("a"), port=1, drained=True))
    reply = await ask(r, "web.service.baton", "SRV")
    assert [x.port for x in reply.answer[0]] == [2, 3, 4]
    # ejected by the balancers: out of every record, as drained; its own name answers
    v.take_outliers("Web", outliers(c=v.wallclock() + 30), seq=1)
    reply = await ask(r, "web.service.baton", "SRV")
    assert [x.port for x in reply.answer[0]] == [2, 4]
    pick.first = "c"  # a balancer that has not seen the ejection yet: stable order
    reply = await ask(r, "web.service.baton", "SRV")
    assert [x.port for x in reply.answer[0]] == [2, 4]
    reply = await ask(r, f"{instance_label('c')}.web.instance.baton", "SRV")
    assert [x.port for x in reply.answer[0]] == [3]


async def test_zone_filter_and_names_as_hosts(dns_view: Any) -> None:
    v, r, pick = dns_view
    v.upsert("web", with_(instance("a", zone="eu.west"), host="db.example.org"))
    v.upsert("web", instance("b", zone="us"))
    reply = await ask(r, "_web._tcp.service.eu.west.baton", "SRV")
    assert pick.asked[-1] == ("web", "eu.west")
    (srv,) = reply.answer[0]
    assert srv.target.to_text() == "a.web.instance.baton."
    (extra,) = reply.additional
    assert extra.rdtype == dns.rdatatype.CNAME
    assert extra[0].target.to_text() == "db.example.org."
    reply = await ask(r, "web.service.eu.west.baton", "A")  # only a name host: one CNAME
    assert reply.answer[0].rdtype == dns.rdatatype.CNAME
    reply = await ask(r, "web.service.asia.baton")
    assert reply.rcode() == dns.rcode.NXDOMAIN


async def test_instances_resolve_alone_whatever_their_health(dns_view: Any) -> None:
    v, r, _ = dns_view
    long_id = "x" * 64
    v.upsert("web", with_(instance(long_id, healthy=False), host="10.1.2.3"))
    name = f"{instance_label(long_id)}.web.instance.baton"
    reply = await ask(r, name)
    assert reply.answer[0][0].address == "10.1.2.3"
    assert (await ask(r, "web.service.baton")).rcode() == dns.rcode.NXDOMAIN  # none serving
    assert (await ask(r, "nobody.web.instance.baton")).rcode() == dns.rcode.NXDOMAIN


async def test_srv_weights_are_effective_weights(dns_view: Any) -> None:
    v, r, _ = dns_view
    now = datetime.now(UTC)
    v.upsert("web", with_(instance("a", weight=80), registered_at=now - timedelta(hours=1)))
    v.upsert("web", with_(instance("b", weight=80), registered_at=now))
    await configure(v, ServiceConfig(service="web", warmup_s=100))
    reply = await ask(r, "web.service.baton", "SRV")
    assert sorted(x.weight for x in reply.answer[0]) == [8, 80]  # b is at its first step


async def configure(v: RegistryView, config: ServiceConfig) -> None:
    """As the config watch calls the view, with an entry of the config log."""
    at = datetime.now(UTC)
    entry = ConfigApplied(
        service=config.service, revision=1, config=config, actor="ann", reason="", at=at
    )
    await v._on_config(entry)


async def test_soa_at_the_apex_and_nodata_for_empty_names(dns_view: Any) -> None:
    v, r, _ = dns_view
    reply = await ask(r, "baton", "SOA")
    assert reply.answer[0].rdtype == dns.rdatatype.SOA
    assert reply.answer[0][0].serial == v.index
    v.upsert("web", instance("a"))
    assert (await ask(r, "nope.instance.baton")).rcode() == dns.rcode.NXDOMAIN
    for name in ("baton", "service.baton", "web.instance.baton"):
        reply = await ask(r, name, "A")
        assert (reply.rcode(), reply.answer) == (dns.rcode.NOERROR, [])
        assert reply.authority[0].rdtype == dns.rdatatype.SOA
    assert reply.flags & dns.flags.AA
    assert not reply.flags & dns.flags.RA


async def test_unreadable_packets_never_raise(dns_view: Any) -> None:
    _, r, _ = dns_view
    for junk in (
        b"",
        b"\x00",
        b"\xff" * 12,
        b"\x00\x01" + b"\x00" * 9 + b"\x01\xff\xff",
        bytes(600),
    ):
        reply = await r.respond(junk, tcp=False)
        if reply is not None:
            assert reply[:2] == junk[:2]
            assert reply[3] & 0x0F in (dns.rcode.FORMERR, dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    assert r.counts["malformed"] >= 2


async def test_servfail_until_the_first_snapshot() -> None:
    v = view(loaded=False)
    r = Responder(v, Fixed(), LOG, domain="baton", ttl=0)
    v.upsert("web", instance("a"))
    assert (await ask(r, "web.service.baton")).rcode() == dns.rcode.SERVFAIL
    assert (await ask(r, "a.web.instance.baton")).rcode() == dns.rcode.SERVFAIL
    assert (await ask(r, "baton", "SOA")).answer  # the zone itself is there
    v.sync.snapshots = 1
    assert (await ask(r, "web.service.baton")).answer  # nothing kept from before


async def test_tag_forms_filter_and_the_pick_is_one_of_them(dns_view: Any) -> None:
    v, r, pick = dns_view
    v.upsert("web", with_(instance("a", metadata={"consul.tags": "primary,v2"}), port=1))
    v.upsert("web", with_(instance("b", metadata={"consul.tags": "v2"}), port=2))
    v.upsert("web", with_(instance("c"), port=3))
    for name in ("V2.web.service.baton", "_web._v2.service.baton"):
        reply = await ask(r, name, "SRV")
        assert [x.port for x in reply.answer[0]] == [1, 2]
        assert pick.excluded == ("c",)  # the balancer picks among the tagged
    reply = await ask(r, "_web._tcp.service.baton", "SRV")  # _tcp: no tag
    assert [x.port for x in reply.answer[0]] == [1, 2, 3]
    assert (await ask(r, "canary.web.service.baton")).rcode() == dns.rcode.NXDOMAIN


def test_tags_are_read_where_the_consul_api_writes_them() -> None:
    # imported here: a unit test of the DNS half that needs the HTTP half only for this
    from services.gateway.dns.responder import TAGS_KEY  # noqa: PLC0415
    from services.gateway.http.consul_model import TAGS_KEY as CONSUL_TAGS  # noqa: PLC0415

    assert TAGS_KEY == CONSUL_TAGS


async def test_consistent_hash_picks_by_the_clients_address(dns_view: Any) -> None:
    v, r, pick = dns_view
    v.upsert("web", instance("a"))
    await ask(r, "web.service.baton", client="10.9.8.7")
    assert pick.key is None  # weighted (the default) needs no key
    await configure(v, ServiceConfig(service="web", strategy="consistent_hash"))
    await ask(r, "web.service.baton", client="10.9.8.7")
    assert pick.key == "10.9.8.7"
