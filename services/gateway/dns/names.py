"""The names the gateway answers, parsed; and the per-instance target names it gives out.

Under the domain (GATEWAY_DOMAIN, `baton` by default), in the spirit of Consul's forms:

    <service>.service.<domain>                A, AAAA, ANY (addresses), SRV
    _<service>._tcp.service.<domain>          the RFC 2782 form of the same (SRV)
    <service>.service.<zone>.<domain>         only the instances in `zone`
    _<service>._tcp.service.<zone>.<domain>   (where Consul puts the datacenter;
                                               a zone with dots spans several labels)
    <tag>.<service>.service[.<zone>].<domain> only the instances with that tag, as Consul's
    _<service>._<tag>.service[.<zone>]...     (`_tcp` is no tag, as in Consul); tags are
                                               the Consul API's (metadata `consul.tags`)
    <instance>.<service>.instance.<domain>    one instance: the SRV targets

An instance's label is its id when the id fits a DNS label (63 bytes), else `i-` and a
hash of it, so every instance has a unique target (HAProxy matches servers by
target and port). DNS compares names without case; Baton's ids keep theirs, so the
responder matches labels case-insensitively.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

import dns.name

__all__ = ["Kind", "Parsed", "instance_label", "parse", "target_name"]

_MAX_LABEL = 63


class Kind(Enum):
    SERVICE = "service"  # a service's instances (maybe of one zone)
    INSTANCE = "instance"  # one instance, by its label
    EMPTY = "empty"  # a name that exists but holds no records (the apex, `service.<domain>`)
    MISSING = "missing"  # under the domain, but no such name: NXDOMAIN
    OUTSIDE = "outside"  # not under the domain: REFUSED, Baton is no open resolver


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: Kind
    service: str = ""
    zone: str = ""
    tag: str = ""
    instance: str = ""  # an instance label, lower case
    rfc2782: bool = False  # asked as _<service>._tcp...


def _text(label: bytes) -> str:
    return label.decode("ascii", errors="replace")


def parse(qname: dns.name.Name, domain: dns.name.Name) -> Parsed:  # noqa: PLR0911  # one per form
    """What `qname` asks for, relative to `domain` (both absolute)."""
    if not qname.is_subdomain(domain):
        return Parsed(Kind.OUTSIDE)
    labels = [_text(lab) for lab in qname.relativize(domain).labels]
    if labels == ["@"] or not labels:  # relativize gives the empty name for the apex
        return Parsed(Kind.EMPTY)
    low = [lab.lower() for lab in labels]
    if low in (["service"], ["instance"]):
        return Parsed(Kind.EMPTY)
    if len(low) >= 3 and low[0].startswith("_") and low[1].startswith("_") and low[2] == "service":
        service, tag = labels[0][1:], labels[1][1:]
        if not service or not tag:
            return _no
        zone = ".".join(labels[3:])
        tag = "" if tag.lower() == "tcp" else tag
        return Parsed(Kind.SERVICE, service=service, zone=zone, tag=tag, rfc2782=True)
    if len(low) >= 2 and low[1] == "service" and not low[0].startswith("_"):
        return Parsed(Kind.SERVICE, service=labels[0], zone=".".join(labels[2:]))
    if len(low) >= 3 and low[2] == "service" and not low[1].startswith("_"):
        return Parsed(Kind.SERVICE, service=labels[1], tag=labels[0], zone=".".join(labels[3:]))
    if len(low) == 3 and low[2] == "instance":
        return Parsed(Kind.INSTANCE, service=labels[1], instance=low[0])
    if len(low) == 2 and low[1] == "instance":
        # <service>.instance: exists (as the parent of its instances) while the service does
        return Parsed(Kind.EMPTY, service=labels[0])
    return _no


_no = Parsed(Kind.MISSING)


def instance_label(instance_id: str) -> str:
    """The DNS label of an instance: its id (lower case) if it fits, else a stable hash."""
    if len(instance_id) <= _MAX_LABEL:
        return instance_id.lower()
    return "i-" + hashlib.blake2b(instance_id.encode(), digest_size=12).hexdigest()


def target_name(instance_id: str, service: str, domain: dns.name.Name) -> dns.name.Name:
    """`<instance>.<service>.instance.<domain>`: where an SRV record points."""
    return dns.name.Name((instance_label(instance_id), service.lower(), "instance", *_rel(domain)))


def _rel(domain: dns.name.Name) -> tuple[str, ...]:
    return tuple(_text(lab) for lab in domain.labels)
