"""DNS answers: pick first then stable order, whole when they fit, trimmed with TC when not."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import pytest

from services.gateway.dns import answers
from services.gateway.dns.answers import TCP_LIMIT, UDP_LIMIT, Target
from services.gateway.dns.names import target_name

DOMAIN = dns.name.from_text("baton")
OWNER = dns.name.from_text("web.service.baton")


def targets(n: int, host: str = "10.0.{hi}.{lo}") -> list[Target]:
    return [
        Target.of(
            f"web-{i:04d}",
            target_name(f"web-{i:04d}", "web", DOMAIN),
            host.format(hi=i // 250, lo=i % 250 + 1),
            8000 + i,
            100,
        )
        for i in range(n)
    ]


def query(rdtype: str, *, payload: int | None = None) -> dns.message.Message:
    if payload is None:
        return dns.message.make_query(OWNER, rdtype, use_edns=False)
    return dns.message.make_query(OWNER, rdtype, use_edns=0, payload=payload)


def answer(
    rdtype: str, ts: list[Target], limit: int, payload: int | None = None
) -> dns.message.Message:
    q = query(rdtype, payload=payload)

    def build(k: int) -> dns.message.Message:
        msg = dns.message.make_response(q)
        if rdtype == "SRV":
            answers.with_srv(msg, OWNER, ts[:k], 0)
        else:
            answers.with_addresses(msg, OWNER, dns.rdatatype.from_text(rdtype), ts[:k], 0)
        return msg

    wire = answers.fit(build, len(ts), limit)
    assert len(wire) <= limit
    return dns.message.from_wire(wire)


def srv_ports(msg: dns.message.Message) -> list[int]:
    return [r.port for rrset in msg.answer for r in rrset]


def test_pick_first_then_the_given_order() -> None:
    ts = targets(5)
    assert [t.instance_id for t in answers.ordered(ts, "web-0003")] == [
        "web-0003", "web-0000", "web-0001", "web-0002", "web-0004",
    ]  # fmt: skip
    assert answers.ordered(ts, None) == ts
    assert answers.ordered(ts, "gone") == ts  # a pick the view no longer has


def test_a_whole_answer_keeps_its_order() -> None:
    ts = answers.ordered(targets(6), "web-0004")
    msg = answer("SRV", ts, UDP_LIMIT * 4)
    assert not msg.flags & dns.flags.TC
    assert srv_ports(msg) == [t.port for t in ts]
    additional = [rrset.name for rrset in msg.additional]
    assert additional == [t.name for t in ts]  # every target's address, same order


@pytest.mark.parametrize("rdtype", ["A", "SRV"])
def test_500_instances_over_udp_are_a_prefix_with_tc(rdtype: str) -> None:
    ts = targets(500)
    msg = answer(rdtype, ts, UDP_LIMIT)
    assert msg.flags & dns.flags.TC
    if rdtype == "SRV":
        ports = srv_ports(msg)
        kept = len(ports)
        assert ports == [t.port for t in ts[:kept]]
        # each kept record's address came with it, and nothing else
        assert [rrset.name for rrset in msg.additional] == [t.name for t in ts[:kept]]
    else:
        addresses = [r.address for rrset in msg.answer for r in rrset]
        kept = len(addresses)
        assert addresses == [t.host for t in ts[:kept]]
    assert kept >= 5  # as many as fit, not none (dnspython alone would drop the set)


def test_edns_raises_the_limit_and_tcp_takes_everything() -> None:
    ts = targets(500)
    small = answer("SRV", ts, UDP_LIMIT)
    big = answer("SRV", ts, 4096, payload=4096)
    assert len(srv_ports(big)) > 4 * len(srv_ports(small))
    whole = answer("SRV", ts, TCP_LIMIT, payload=4096)
    assert not whole.flags & dns.flags.TC
    assert srv_ports(whole) == [t.port for t in ts]


def test_more_than_tcp_can_carry_is_trimmed_too() -> None:
    ts = targets(1200, host="fd00::{hi}:{lo}")
    msg = answer("SRV", ts, TCP_LIMIT)
    assert msg.flags & dns.flags.TC
    assert 500 < len(srv_ports(msg)) < 1200


def test_addresses_by_family_and_names_as_cname() -> None:
    v4 = Target.of("a", target_name("a", "web", DOMAIN), "10.0.0.1", 80, 1)
    v6 = Target.of("b", target_name("b", "web", DOMAIN), "fd00::1", 80, 1)
    named = Target.of("c", target_name("c", "web", DOMAIN), "db.example.org", 80, 1)
    msg = dns.message.make_response(query("A"))
    assert answers.with_addresses(msg, OWNER, dns.rdatatype.A, [named, v6, v4], 0)
    assert [(rrset.rdtype, [r.to_text() for r in rrset]) for rrset in msg.answer] == [
        (dns.rdatatype.A, ["10.0.0.1"])
    ]
    msg = dns.message.make_response(query("ANY"))
    assert answers.with_addresses(msg, OWNER, dns.rdatatype.ANY, [v4, v6], 0)
    assert [rrset.rdtype for rrset in msg.answer] == [dns.rdatatype.A, dns.rdatatype.AAAA]
    msg = dns.message.make_response(query("AAAA"))
    assert not answers.with_addresses(msg, OWNER, dns.rdatatype.AAAA, [v4], 0)  # NODATA
    msg = dns.message.make_response(query("A"))
    assert answers.with_addresses(msg, OWNER, dns.rdatatype.A, [named], 0)
    assert msg.answer[0].rdtype == dns.rdatatype.CNAME
    assert msg.answer[0][0].target == dns.name.from_text("db.example.org")


def test_srv_carries_weight_port_and_target() -> None:
    t = Target.of("a", target_name("a", "web", DOMAIN), "10.0.0.1", 9000, 37)
    msg = dns.message.make_response(query("SRV"))
    answers.with_srv(msg, OWNER, [t], 5)
    (srv,) = msg.answer[0]
    assert (srv.priority, srv.weight, srv.port, srv.target) == (1, 37, 9000, t.name)
    assert msg.answer[0].ttl == 5


def test_soa_serial_and_minimum() -> None:
    rrset = answers.soa(DOMAIN, 2**32 + 7, 0)
    (soa,) = rrset
    assert (rrset.name, soa.serial, soa.minimum, rrset.ttl) == (DOMAIN, 7, 0, 0)


def mixed(n: int) -> list[Target]:
    """IPv4, IPv6 and name hosts, some sharing an address."""
    hosts = ["10.0.0.1", "10.0.0.2", "fd00::1", "db.example.org", "10.0.0.1"]
    return [
        Target.of(f"w{i}", target_name(f"w{i}", "web", DOMAIN), hosts[i % 5], 9000 + i, 10 + i)
        for i in range(n)
    ]


@pytest.mark.parametrize("rdtype", ["SRV", "A"])
def test_moving_the_pick_first_equals_building_it_first(rdtype: str) -> None:
    ts = mixed(40)
    code = dns.rdatatype.from_text(rdtype)

    def whole(order: list[Target]) -> bytes:
        msg = dns.message.make_response(query(rdtype, payload=4096))
        if rdtype == "SRV":
            answers.with_srv(msg, OWNER, order, 0)
        else:
            answers.with_addresses(msg, OWNER, code, order, 0)
        return answers.render(msg)

    stable = whole(ts)
    for t in ts:
        records = [t.srv] if rdtype == "SRV" else t.records(code)
        if not records:
            continue  # a name host has no A record to move
        data = records[0].to_wire()
        assert data is not None
        moved = answers.first(stable, data)
        assert moved is not None
        assert len(moved) == len(stable)
        got, want = dns.message.from_wire(moved), dns.message.from_wire(whole(ts))
        direct = dns.message.from_wire(whole(answers.ordered(ts, t.instance_id)))
        assert [r.to_text() for r in got.answer[0]] == [r.to_text() for r in direct.answer[0]]
        assert got.additional == want.additional  # untouched, every name still resolves
        assert got.question == direct.question


def test_nothing_to_move_or_unsafe_to_move() -> None:
    ts = mixed(3)
    msg = dns.message.make_response(query("A"))
    answers.with_addresses(msg, OWNER, dns.rdatatype.A, ts, 0)
    stable = answers.render(msg)
    assert answers.first(stable, b"\x0a\x09\x09\x09") is None  # no such record
    cname = Target.of("c", target_name("c", "web", DOMAIN), "db.example.org", 1, 1)
    alias = dns.message.make_response(query("A"))
    answers.with_addresses(alias, OWNER, dns.rdatatype.A, [cname], 0)
    data = cname.cname().to_wire()
    assert data is not None
    assert answers.first(answers.render(alias), data) is None  # a CNAME is never moved
