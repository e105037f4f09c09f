"""The gateway's DNS, asked by real clients: dnspython's resolver and dig (bind9-dnsutils)."""

from __future__ import annotations

import asyncio
import shutil
import socket
from typing import TYPE_CHECKING, Any

import dns.asyncquery
import dns.asyncresolver
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
from conftest import reg
from waiting import until
from workers import run_gateway, run_governor

from schemas import subjects
from schemas.governor import ConfigApplied, ConfigChange, OverridePatch
from schemas.registry import Ack, Registration

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from natsserver import NatsServer

    from services.bus import Bus
    from services.gateway import Gateway

pytestmark = pytest.mark.usefixtures("balancer")
DIG = shutil.which("dig")


@pytest.fixture
async def gateway(nats_server: NatsServer) -> AsyncIterator[Gateway]:
    async with run_governor(nats_server.url), run_gateway(nats_server.url, dns_port=-1) as gw:
        await asyncio.wait_for(gw.view.synced.wait(), 5)
        yield gw


def resolver(gw: Gateway) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = gw.dns_port
    r.lifetime = 5
    return r


async def ask(gw: Gateway, name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=gw.dns_port, timeout=5)


async def fleet(bus: Bus, gw: Gateway, *regs: Any, service: str = "web") -> None:
    for r in regs:
        await bus.request(subjects.register(service), r, Ack)
    ids = {r.instance_id for r in regs}
    await until(lambda: ids <= gw.view.known().get(service, set()))


async def test_a_srv_and_rfc2782_with_dnspython(bus: Bus, gateway: Gateway) -> None:
    await fleet(
        bus,
        gateway,
        reg("web-1", port=9001, zone="z1"),
        reg("web-2", port=9002, weight=30),
        reg("web-3", port=9003, zone="z1"),
    )
    r = resolver(gateway)
    a = await r.resolve("web.service.baton", "A")
    assert [x.address for x in a] == ["127.0.0.1"]  # three instances, one address: one record
    for name in ("web.service.baton", "_web._tcp.service.baton"):
        srv = await r.resolve(name, "SRV")
        got = {(x.port, x.weight, x.priority, x.target.to_text()) for x in srv}
        assert got == {
            (9001, 100, 1, "web-1.web.instance.baton."),
            (9002, 30, 1, "web-2.web.instance.baton."),
            (9003, 100, 1, "web-3.web.instance.baton."),
        }
        extra = {rrset.name.to_text(): rrset[0].address for rrset in srv.response.additional}
        assert extra == {f"web-{i}.web.instance.baton.": "127.0.0.1" for i in (1, 2, 3)}
    target = await r.resolve("web-2.web.instance.baton", "A")  # a target resolves alone
    assert [x.address for x in target] == ["127.0.0.1"]
    zoned = await r.resolve("_web._tcp.service.z1.baton", "SRV")
    assert sorted(x.port for x in zoned) == [9001, 9003]


async def test_first_record_is_the_strategys_pick_rest_stable(
    bus: Bus, gateway: Gateway, balancer: Any
) -> None:
    # weighted 5:1:1 picks a a b a c a a, as resolve does; DNS asks the balancer
    await fleet(
        bus,
        gateway,
        reg("a", port=9001, weight=5),
        reg("b", port=9002, weight=1),
        reg("c", port=9003, weight=1),
    )
    firsts = []
    for _ in range(7):
        msg = await ask(gateway, "web.service.baton", "SRV")
        ports = [x.port for x in msg.answer[0]]
        assert sorted(ports) == [9001, 9002, 9003]  # whole every time
        rest = [p for p in [9001, 9002, 9003] if p != ports[0]]
        assert ports[1:] == rest  # the others in instance-id order
        firsts.append({9001: "a", 9002: "b", 9003: "c"}[ports[0]])
    assert "".join(firsts) == "aabacaa"
    # and the balancer holds nothing in flight for them: nobody reports a DNS pick
    assert all(m.load == 0 for m in balancer.pools["web"].members.values())


async def test_consistent_hash_keeps_each_client_on_its_instance(
    bus: Bus, gateway: Gateway
) -> None:
    await fleet(bus, gateway, *(reg(f"i{n}", port=9000 + n) for n in range(5)))
    change = ConfigChange(actor="ann", strategy="consistent_hash")
    await bus.request(subjects.change("web"), change, ConfigApplied)
    await until(lambda: gateway.view.services["web"].config.strategy == "consistent_hash")

    async def first(source: str) -> int:
        q = dns.message.make_query("web.service.baton", "SRV")
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=gateway.dns_port, source=source)
        return int(r.answer[0][0].port)

    for source in ("127.0.0.1", "127.0.0.2"):  # the same client: the same first record
        assert len({await first(source) for _ in range(4)}) == 1
    firsts = {await first(f"127.0.0.{n}") for n in range(1, 10)}
    assert len(firsts) > 1  # other clients, other instances
    assert gateway.pick_failures == {}  # the balancer had its key: no fallback order


async def test_drained_weight_zero_and_ipv6(bus: Bus, gateway: Gateway) -> None:
    await fleet(
        bus,
        gateway,
        reg("a", port=9001),
        reg("b", port=9002),
        reg("z", port=9003, weight=0),
        Registration(instance_id="v6", host="::1", port=9004),
    )
    change = ConfigChange(actor="ann", instances={"b": OverridePatch(drained=True)})
    await bus.request(subjects.change("web"), change, ConfigApplied)
    await until(lambda: gateway.view.services["web"].instances["b"].drained)
    srv = await ask(gateway, "web.service.baton", "SRV")
    assert sorted(x.port for x in srv.answer[0]) == [9001, 9004]
    aaaa = await resolver(gateway).resolve("web.service.baton", "AAAA")
    assert [x.address for x in aaaa] == ["::1"]
    v6 = await ask(gateway, "v6.web.instance.baton", "AAAA")
    assert v6.answer[0][0].address == "::1"


async def test_negative_answers_carry_the_soa(bus: Bus, gateway: Gateway) -> None:
    await fleet(bus, gateway, reg("a"))
    nx = await ask(gateway, "nope.service.baton")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert not nx.answer
    assert nx.authority[0].rdtype == dns.rdatatype.SOA
    nodata = await ask(gateway, "web.service.baton", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR
    assert not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    aaaa = await ask(gateway, "web.service.baton", "AAAA")  # an IPv4-only service
    assert (aaaa.rcode(), aaaa.answer) == (dns.rcode.NOERROR, [])
    assert aaaa.authority[0].rdtype == dns.rdatatype.SOA
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver(gateway).resolve("nope.service.baton", "A")
    refused = await ask(gateway, "example.com")
    assert refused.rcode() == dns.rcode.REFUSED
    assert gateway.responder.counts["refused"] == 1


async def test_500_instances_truncate_over_udp_and_come_whole_over_tcp(
    bus: Bus, gateway: Gateway
) -> None:
    regs = [reg(f"web-{i:03d}", port=10000 + i) for i in range(500)]
    await asyncio.gather(*(bus.request(subjects.register("web"), r, Ack) for r in regs))
    await until(lambda: len(gateway.view.known().get("web", ())) == 500, timeout=20)
    udp = await ask(gateway, "web.service.baton", "SRV", use_edns=False)
    assert udp.flags & dns.flags.TC
    kept = [x.port for x in udp.answer[0]]
    assert 5 <= len(kept) < 500
    wire = udp.to_wire()
    assert len(wire) <= 512
    edns = await ask(gateway, "web.service.baton", "SRV", use_edns=0, payload=4096)
    assert edns.flags & dns.flags.TC
    assert len(edns.answer[0]) > 4 * len(kept)
    # dnspython's resolver retries a truncated answer over TCP: everything, in order
    srv = await resolver(gateway).resolve("web.service.baton", "SRV")
    assert sorted(x.port for x in srv) == [10000 + i for i in range(500)]
    assert len(srv.response.additional) == 500
    assert not srv.response.flags & dns.flags.TC


async def test_malformed_packets_are_counted_and_answered_formerr(gateway: Gateway) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)  # noqa: FBT003
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", gateway.dns_port))
    try:
        await loop.sock_sendall(sock, b"\x12\x34\x01\x00\x00\x01\x00\x00garbage")
        reply = await asyncio.wait_for(loop.sock_recv(sock, 512), 5)
        msg = dns.message.from_wire(reply)
        assert (msg.id, msg.rcode()) == (0x1234, dns.rcode.FORMERR)
        await loop.sock_sendall(sock, b"\x00")  # not even a header: dropped
    finally:
        sock.close()
    await until(lambda: gateway.responder.counts["malformed"] == 2)
    ok = await ask(gateway, "baton", "SOA")  # and the server still answers
    assert ok.answer[0].rdtype == dns.rdatatype.SOA


async def test_what_is_not_a_plain_query_gets_a_clear_rcode(gateway: Gateway) -> None:
    notify = dns.message.make_query("baton", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    chaos = dns.message.make_query("version.bind", "TXT", "CH")
    v1 = dns.message.make_query("baton", "SOA", use_edns=1)
    two = dns.message.make_query("baton", "SOA")
    two.question.append(two.question[0])
    for query, rcode in (
        (notify, dns.rcode.NOTIMP),
        (chaos, dns.rcode.REFUSED),
        (v1, dns.rcode.BADVERS),
        (two, dns.rcode.FORMERR),
    ):
        reply = await dns.asyncquery.udp(query, "127.0.0.1", port=gateway.dns_port, timeout=5)
        assert (reply.id, reply.rcode()) == (query.id, rcode)


async def test_panic_answers_unhealthy_instances_too(bus: Bus, gateway: Gateway) -> None:
    await fleet(
        bus,
        gateway,
        reg("a", port=9001),
        reg("b", port=9002, ttl_s=2),
        reg("c", port=9003, ttl_s=2),
    )
    change = ConfigChange(actor="ann", protect_threshold=0.5)
    await bus.request(subjects.change("web"), change, ConfigApplied)
    state = gateway.view.services["web"]
    await until(lambda: state.config.protect_threshold == 0.5)
    # b and c never beat: unhealthy after 2 s (expired after 4); 1 healthy of 3 is in panic
    await until(lambda: not any(state.instances[i].healthy for i in "bc"), timeout=10)
    srv = await ask(gateway, "web.service.baton", "SRV")
    assert sorted(x.port for x in srv.answer[0]) == [9001, 9002, 9003]
    assert gateway.responder.counts["panic"] >= 1


@pytest.mark.skipif(DIG is None, reason="dig missing: `just dns-tools` installs bind9-dnsutils")
async def test_dig_every_form_truncation_and_tcp_fallback(bus: Bus, gateway: Gateway) -> None:
    regs = [reg(f"web-{i:02d}", port=10000 + i) for i in range(40)]
    await fleet(bus, gateway, *regs)

    async def dig(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(DIG), "@127.0.0.1", "-p", str(gateway.dns_port), "+time=3", "+tries=1", *args,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return out.decode()

    def records(out: str, rdtype: str) -> list[str]:
        return [ln for ln in out.splitlines() if not ln.startswith(";") and f"\t{rdtype}\t" in ln]

    out = await dig("web.service.baton", "SRV")  # more than 1232 bytes: dig retries on TCP
    assert "status: NOERROR" in out
    assert len(records(out, "SRV")) == 40
    out = await dig("+short", "web-07.web.instance.baton")
    assert out.split() == ["127.0.0.1"]
    out = await dig("+noedns", "+ignore", "_web._tcp.service.baton", "SRV")
    assert " tc" in out.split("flags:")[1].split(";")[0]  # truncated, and kept truncated
    assert 0 < len(records(out, "SRV")) < 40
    out = await dig("+noedns", "_web._tcp.service.baton", "SRV")  # dig retries over TCP
    assert "Truncated, retrying in TCP mode" in out
    assert len(records(out, "SRV")) == 40
    out = await dig("+tcp", "web.service.baton", "A")
    assert len(records(out, "A")) == 1  # every instance on 127.0.0.1: one A record
    out = await dig("nope.service.baton")
    assert "status: NXDOMAIN" in out
    assert len(records(out, "SOA")) == 1
    out = await dig("web.service.baton", "TXT")
    assert "status: NOERROR" in out
    assert "ANSWER: 0" in out
    assert len(records(out, "SOA")) == 1
    out = await dig("example.com")
    assert "status: REFUSED" in out
