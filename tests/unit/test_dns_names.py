"""The gateway's DNS names: every form parsed, and unique per-instance targets."""

from __future__ import annotations

import dns.name
import pytest

from services.gateway.dns.names import Kind, Parsed, instance_label, parse, target_name

DOMAIN = dns.name.from_text("baton")


def p(text: str) -> Parsed:
    return parse(dns.name.from_text(text), DOMAIN)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web.service.baton", Parsed(Kind.SERVICE, service="web")),
        ("WEB.Service.BATON", Parsed(Kind.SERVICE, service="WEB")),
        ("_web._tcp.service.baton", Parsed(Kind.SERVICE, service="web", rfc2782=True)),
        ("web.service.eu-1.baton", Parsed(Kind.SERVICE, service="web", zone="eu-1")),
        ("web.service.eu.west.baton", Parsed(Kind.SERVICE, service="web", zone="eu.west")),
        (
            "_web._tcp.service.eu-1.baton",
            Parsed(Kind.SERVICE, service="web", zone="eu-1", rfc2782=True),
        ),
        ("web-1.web.instance.baton", Parsed(Kind.INSTANCE, service="web", instance="web-1")),
        ("Web-1.web.instance.baton", Parsed(Kind.INSTANCE, service="web", instance="web-1")),
        ("baton", Parsed(Kind.EMPTY)),
        ("service.baton", Parsed(Kind.EMPTY)),
        ("web.instance.baton", Parsed(Kind.EMPTY, service="web")),
        ("web.baton", Parsed(Kind.MISSING)),
        ("_web._udp.service.baton", Parsed(Kind.SERVICE, service="web", tag="udp", rfc2782=True)),
        ("primary.web.service.baton", Parsed(Kind.SERVICE, service="web", tag="primary")),
        (
            "primary.web.service.eu-1.baton",
            Parsed(Kind.SERVICE, service="web", tag="primary", zone="eu-1"),
        ),
        (
            "_web._primary.service.baton",
            Parsed(Kind.SERVICE, service="web", tag="primary", rfc2782=True),
        ),
        ("_web._.service.baton", Parsed(Kind.MISSING)),
        ("__tcp.service.baton", Parsed(Kind.MISSING)),
        ("a.b.web.instance.baton", Parsed(Kind.MISSING)),
        ("example.com", Parsed(Kind.OUTSIDE)),
        ("baton.example.com", Parsed(Kind.OUTSIDE)),
    ],
)
def test_names(name: str, expected: Parsed) -> None:
    assert p(name) == expected


def test_a_longer_domain() -> None:
    domain = dns.name.from_text("svc.example.internal")
    parsed = parse(dns.name.from_text("web.service.svc.example.internal"), domain)
    assert parsed == Parsed(Kind.SERVICE, service="web")


def test_targets_are_unique_labels_that_parse_back() -> None:
    long_a, long_b = "x" * 64, "x" * 63 + "y"
    labels = {instance_label(i) for i in ("web-1", "web-2", long_a, long_b)}
    assert len(labels) == 4
    assert all(len(label) <= 63 for label in labels)
    for iid in ("web-1", long_a):
        name = target_name(iid, "Web", DOMAIN)
        assert name.is_absolute()
        assert parse(name, DOMAIN) == Parsed(
            Kind.INSTANCE, service="web", instance=instance_label(iid)
        )
