"""DNS answers from a service's instances: the order of the records, and the size rules.

Pure: the responder gives the instances (already chosen: healthy, not drained, weight
> 0), the one the strategy picked, and the size limit; these build the message.

Order: the pick first, the rest in instance-id order. Stable, so two answers differ only
in their first record, and whole: a client like HAProxy removes a server missing from
one answer, so a random subset would make it flap.

Size: a UDP answer may be at most 512 bytes without EDNS, or the client's advertised
payload with it; TCP carries up to 65535. When the whole answer does not fit, the
longest prefix of the order that does is sent with TC set (dnspython's renderer drops a
whole RRset that does not fit, which for a large SRV set leaves no records at all).
An SRV answer keeps each kept record's address in the additional section with it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

# dnspython's rdata constructors are untyped (`type: ignore[no-untyped-call]` below)
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "TCP_LIMIT",
    "UDP_LIMIT",
    "UDP_MAX",
    "Target",
    "first",
    "fit",
    "largest",
    "ordered",
    "render",
    "soa",
    "with_addresses",
    "with_srv",
]

UDP_LIMIT = 512  # a UDP answer without EDNS (RFC 1035)
UDP_MAX = 65507  # the largest UDP payload over IPv4, whatever EDNS advertises
TCP_LIMIT = 65535  # what a 2-byte length prefix can carry
_IN = dns.rdataclass.IN
A, AAAA, SRV, CNAME, ANY = (
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.SRV,
    dns.rdatatype.CNAME,
    dns.rdatatype.ANY,
)


@dataclass(frozen=True, slots=True)
class Target:
    """One instance as DNS shows it, its records made once (answers reuse them)."""

    instance_id: str
    name: dns.name.Name  # its own name, the SRV target
    host: str
    port: int
    weight: int  # effective: after overrides and slow start
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # None: host is a name
    a: list[dns.rdata.Rdata]  # its A record, if its host is an IPv4 address
    aaaa: list[dns.rdata.Rdata]  # its AAAA record, if IPv6
    alias: dns.rdata.Rdata | None  # a CNAME to its host, if its host is a name
    srv: dns.rdata.Rdata  # 1 <weight> <port> <name>
    extra: dns.rrset.RRset  # what the additional section says of `name`

    @classmethod
    def of(
        cls, instance_id: str, name: dns.name.Name, host: str, port: int, weight: int, ttl: int = 0
    ) -> Target:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        a: list[dns.rdata.Rdata] = []
        aaaa: list[dns.rdata.Rdata] = []
        alias = None
        if isinstance(address, ipaddress.IPv4Address):
            a = [dns.rdtypes.IN.A.A(_IN, A, str(address))]  # type: ignore[no-untyped-call]
        elif isinstance(address, ipaddress.IPv6Address):
            aaaa = [dns.rdtypes.IN.AAAA.AAAA(_IN, AAAA, str(address))]  # type: ignore[no-untyped-call]
        else:
            alias = dns.rdtypes.ANY.CNAME.CNAME(_IN, CNAME, dns.name.from_text(host))  # type: ignore[no-untyped-call]
        srv = dns.rdtypes.IN.SRV.SRV(_IN, SRV, 1, min(weight, 65535), port, name)  # type: ignore[no-untyped-call]
        own = a or aaaa or ([alias] if alias is not None else [])  # the one kind it has
        extra = dns.rrset.from_rdata_list(name, ttl, own)
        return cls(instance_id, name, host, port, weight, address, a, aaaa, alias, srv, extra)

    def records(self, rdtype: int) -> list[dns.rdata.Rdata]:
        """This target's address records of `rdtype` (A or AAAA); none for a name host."""
        return self.a if rdtype == A else self.aaaa if rdtype == AAAA else []

    def cname(self) -> dns.rdata.Rdata:
        """For a host that is a name: the alias to it (absolute)."""
        assert self.alias is not None  # noqa: S101  # asked only of name hosts
        return self.alias


def ordered(targets: Sequence[Target], first: str | None) -> list[Target]:
    """The pick first, then the rest in the order given (instance-id order)."""
    out = list(targets)
    for n, t in enumerate(out):
        if t.instance_id == first:
            if n:
                out.insert(0, out.pop(n))
            break
    return out


def soa(domain: dns.name.Name, serial: int, minimum: int) -> dns.rrset.RRset:
    """The zone's SOA, for the authority section of negative answers (RFC 2308).

    Its TTL and minimum are the records' TTL, so a negative answer is cached no longer
    than a positive one (0 by default: not at all). The serial is the view's index.
    """
    rdata = dns.rdtypes.ANY.SOA.SOA(  # type: ignore[no-untyped-call]
        _IN,
        dns.rdatatype.SOA,
        dns.name.Name(("ns", *domain.labels)),
        dns.name.Name(("hostmaster", *domain.labels)),
        serial % 2**32,
        3600,
        600,
        86400,
        minimum,
    )
    return dns.rrset.from_rdata_list(domain, minimum, [rdata])


def with_addresses(
    response: dns.message.Message,
    owner: dns.name.Name,
    qtype: int,
    targets: Sequence[Target],
    ttl: int,
) -> bool:
    """Add the A/AAAA records of `targets` (both for ANY) in order; False if none.

    Targets whose host is a name have no address: if no target has one, the first
    name host is answered as a CNAME (one alias: an owner holds only one).
    """
    kinds = (A, AAAA) if qtype == ANY else (qtype,)
    added = False
    for rdtype in kinds:
        rdatas = [r for t in targets for r in t.records(rdtype)]
        if rdatas:
            response.answer.append(dns.rrset.from_rdata_list(owner, ttl, rdatas))
            added = True
    if not added:
        named = next((t for t in targets if t.address is None), None)
        if named is not None:
            response.answer.append(dns.rrset.from_rdata_list(owner, ttl, [named.cname()]))
            added = True
    return added


def with_srv(
    response: dns.message.Message,
    owner: dns.name.Name,
    targets: Sequence[Target],
    ttl: int,
) -> None:
    """SRV records of `targets` in order, each target's address in the additional section.

    Priority 1 for all (one tier), the effective weight, the port, the target's own
    name; a name host's target is a CNAME to its host in the additional section.
    """
    if not targets:
        return
    response.answer.append(dns.rrset.from_rdata_list(owner, ttl, [t.srv for t in targets]))
    response.additional.extend(t.extra for t in targets)


def render(message: dns.message.Message, limit: int = TCP_LIMIT) -> bytes:
    """The wire form, records in the order given (dnspython shuffles them by default)."""
    return message.to_wire(max_size=limit, prefer_truncation=True, want_shuffle=False)


def largest(fits: Callable[[int], bool], guess: int, count: int) -> int:
    """The largest k in [0, count) with fits(k), fits monotone; galloping from `guess`."""
    if fits(guess):
        good, step = guess, 1
        while good + step < count and fits(good + step):
            good, step = good + step, step * 2
        bad = min(good + step, count)
    else:
        bad, step = guess, 1
        while bad - step > 0 and not fits(bad - step):
            bad, step = bad - step, step * 2
        good = max(bad - step, 0)
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def fit(build: Callable[[int], dns.message.Message], count: int, limit: int) -> bytes:
    """The wire form of `build(count)`, or of the largest `build(k)` under `limit`, TC set.

    `build(k)` makes the answer with the first k records of the order. The answers of
    one and two records give the bytes a record takes (records of one answer are about
    the same size); from there k steps to the largest that fits. So a 512-byte answer
    out of 500 instances renders a few small messages, and a whole one renders once.
    """
    wires: dict[int, bytes | None] = {}

    def wire(k: int) -> bytes | None:  # None: too big
        if k not in wires:
            message = build(k)
            if k < count:
                message.flags |= dns.flags.TC
            try:
                wires[k] = message.to_wire(max_size=limit, want_shuffle=False)
            except dns.exception.TooBig:
                wires[k] = None
        return wires[k]

    one = wire(min(1, count))
    if one is None:  # not even one record: the question alone, TC set
        return wire(0) or b""
    if count <= 1:
        return one
    two = wire(2)
    if two is None:
        return one
    guess = 2 + (limit - len(two)) // max(1, len(two) - len(one))
    if guess >= count:
        whole = wire(count)
        if whole is not None:
            return whole
        guess = count - 1
    k = largest(lambda k: wire(k) is not None, max(2, guess), count)
    found = wire(k)
    assert found is not None  # noqa: S101  # k = 2 fits
    return found


def _skip_name(wire: bytes, i: int) -> int:
    """The offset after the (possibly compressed) name at `i`."""
    while True:
        length = wire[i]
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return i + 2
        if length == 0:
            return i + 1
        i += length + 1


_MOVABLE = frozenset({A, AAAA, SRV})


def first(wire: bytes, rdata: bytes) -> bytes | None:
    """`wire` with the answer record holding `rdata` moved to the front; None if it cannot.

    A whole answer of many records is rendered once in stable order; each pick's answer
    is then this: the same bytes, one record moved. Safe because every answer record
    here is self-contained: its owner is a pointer to the question's name, and A, AAAA
    and SRV data hold no name that anything else points into (SRV targets are never
    compressed, RFC 2782). So no offset elsewhere in the message changes.
    """
    if int.from_bytes(wire[4:6], "big") != 1:
        return None
    start = _skip_name(wire, 12) + 4  # the question's name, type and class
    spans = []
    i = start
    for _ in range(int.from_bytes(wire[6:8], "big")):
        owner = i
        if wire[i] & 0xC0 != 0xC0:
            return None  # an owner written out: something may point into it
        i = _skip_name(wire, i)
        if int.from_bytes(wire[i : i + 2], "big") not in _MOVABLE:
            return None
        size = int.from_bytes(wire[i + 8 : i + 10], "big")
        i += 10 + size
        spans.append((owner, i))
    for n, (head, end) in enumerate(spans):
        if end - head - 12 == len(rdata) and wire[end - len(rdata) : end] == rdata:
            if n == 0:
                return wire
            moved = wire[head:end]
            return wire[:start] + moved + wire[start:head] + wire[end:]
    return None
