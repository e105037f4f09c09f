"""The Consul <-> Baton model map (pure), Consul's durations and the blocking rules."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec
import pytest
from builders import instance

from schemas.balancer import Ejection
from services.errors import BadRequest
from services.gateway.http.blocking import MAX_WAIT_S, block, blocking_params
from services.gateway.http.consul_model import parse_registration, registration_for
from services.gateway.http.consul_render import (
    aggregated,
    catalog_entry,
    checks_of,
    from_instance,
    health_entry,
)
from services.gateway.http.params import DurationError, parse_duration
from services.gateway.http.prometheus_sd import target_group

if TYPE_CHECKING:
    from schemas.registry import Instance


def test_go_durations() -> None:
    assert parse_duration("10s") == 10
    assert parse_duration("1m30s") == 90
    assert parse_duration("120000ms") == 120
    assert parse_duration("1.5h") == 5400
    assert parse_duration("0") == 0
    for bad in ("10", "", "s", "10 s", "1d", "10s5"):
        with pytest.raises(DurationError, match="write a number with a unit"):
            parse_duration(bad)


def test_registration_any_capitalisation_and_snake_case() -> None:
    bodies = [
        {"Name": "web", "ID": "web-1", "Port": 8080, "Check": {"TTL": "10s"}},
        {"name": "web", "id": "web-1", "port": 8080, "checks": [{"ttl": "10s"}]},
        {"NAME": "web", "Id": "web-1", "port": 8080, "check": {"Ttl": "10s", "status": None}},
    ]
    seen = [parse_registration(b, caller="10.0.0.9") for b in bodies]
    assert all(s == seen[0] for s in seen)
    svc = seen[0]
    assert (svc.service, svc.instance_id, svc.host, svc.port) == ("web", "web-1", "10.0.0.9", 8080)
    assert svc.check is not None
    assert svc.check.ttl_s == 10
    assert svc.check.status == "critical"  # Consul: a new check starts critical
    assert svc.check.check_id == "service:web-1"


def test_registration_maps_tags_meta_weights_zone_and_deregister_after() -> None:
    svc = parse_registration(
        {
            "Name": "api",
            "Address": "10.1.2.3",
            "Port": 9000,
            "Tags": ["v2", "canary"],
            "Meta": {"version": "2.1", "owner": "team-a"},
            "Weights": {"Passing": 7, "Warning": 2},
            "Locality": {"Zone": "eu-1a"},
            "Check": {
                "CheckID": "api-ttl",
                "TTL": "5s",
                "Status": "passing",
                "deregister_critical_service_after": "30s",
            },
        },
        caller="127.0.0.1",
    )
    assert svc.instance_id == "api"  # ID defaults to Name
    assert svc.check is not None
    assert svc.check.deregister_after_s == 60  # Consul's floor is one minute
    passing = registration_for(svc, "passing")
    assert passing.host == "10.1.2.3"
    assert passing.weight == 7
    assert passing.zone == "eu-1a"
    assert passing.version == "2.1"
    assert passing.ttl_s == 5
    assert passing.metadata["consul.tags"] == "v2,canary"
    assert passing.metadata["consul.check"] == "api-ttl"
    assert passing.metadata["owner"] == "team-a"
    assert registration_for(svc, "warning").weight == 2
    critical = registration_for(svc, "critical")
    assert critical.weight == 0  # never resolved while critical
    assert critical.metadata["consul.status"] == "critical"


@pytest.mark.parametrize(
    ("body", "sentence"),
    [
        ({"Port": 80}, "Name is required"),
        ({"Name": "web"}, "Port must be 1..65535"),
        ({"Name": "w.eb", "Port": 80}, "Name \\(the service name\\) 'w.eb' contains '.'"),
        ({"Name": "web", "Port": 80, "Check": {"HTTP": "http://x/"}}, "Check.Interval is req"),
        ({"Name": "web", "Port": 80, "Check": {"Args": ["sh"]}}, "remote code execution"),
        ({"Name": "web", "Port": 80, "Check": {"UDP": "x:1", "Interval": "5s"}}, "UDP checks"),
        (
            {"Name": "web", "Port": 80, "Check": {"TCP": "x:1", "Interval": "5s", "Timeout": 3}},
            "Check.Timeout must be a duration",
        ),
        (
            {"Name": "web", "Port": 80, "Checks": [{"TCP": "x:1", "Interval": "0s"}]},
            "interval_s must be a number of seconds 0.05..3600, got 0.0",
        ),
        (
            {
                "Name": "web",
                "Port": 80,
                "Check": {"HTTP": "h", "Interval": "1s", "Header": {"a": 1}},
            },
            "Check.Header must be",
        ),
        ({"Name": "web", "Port": 80, "Check": {"TTL": "10"}}, "not a duration"),
        ({"Name": "web", "Port": 80, "Check": {"TTL": "2h"}}, "between 1s and 1h"),
        ({"Name": "web", "Port": 80, "Checks": [{"TTL": "5s"}, {"TTL": "6s"}]}, "one lease"),
        ({"Name": "web", "Port": 80, "Check": {"TTL": "5s", "Status": "ok"}}, "Status 'ok'"),
        ({"Name": "web", "Port": 80, "Tags": ["a,b"]}, "no ','"),
        ({"Name": "web", "Port": 80, "Weights": {"Passing": -1}}, "Weights.Passing"),
        ({"Name": "web", "Port": 80, "Connect": {"Native": True}}, "Connect"),
        ([1, 2], "JSON object"),
    ],
)
def test_registration_errors_say_what_to_fix(body: object, sentence: str) -> None:
    with pytest.raises(BadRequest, match=sentence):
        parse_registration(body, caller="127.0.0.1")


def _inst(**kw: object) -> Instance:
    return msgspec.structs.replace(instance("web-1"), **kw)


def test_checks_follow_health_drain_and_status() -> None:
    passing = _inst(metadata={"consul.status": "passing"})
    assert aggregated(checks_of(passing, "web", "dc", 3)) == "passing"
    warning = _inst(metadata={"consul.status": "warning"})
    assert aggregated(checks_of(warning, "web", "dc", 3)) == "warning"
    lapsed = _inst(healthy=False, metadata={"consul.status": "passing"})
    checks = checks_of(lapsed, "web", "dc", 3)
    assert aggregated(checks) == "critical"
    assert "TTL expired" in checks[1]["Output"]
    drained = _inst(drained=True)
    checks = checks_of(drained, "web", "dc", 3)
    assert checks[-1]["CheckID"] == "_service_maintenance:web-1"
    assert checks[-1]["Status"] == "critical"
    assert aggregated(checks) == "maintenance"
    native = _inst()  # registered over NATS: its lease is its check
    assert [c["Status"] for c in checks_of(native, "web", "dc", 3)] == ["passing", "passing"]


def test_an_ejected_instance_has_a_critical_outlier_check() -> None:
    ejection = Ejection(
        since=1_700_000_000.0, until=1_700_000_030.5, reason="consecutive_failures: 5", times=2
    )
    checks = checks_of(_inst(), "web", "dc", 3, ejection)
    outlier = checks[-1]
    assert outlier["CheckID"] == "baton:outlier:web-1"
    assert outlier["Name"] == "baton:outlier"
    assert outlier["Status"] == "critical"
    assert outlier["Output"] == (
        "ejected until 2023-11-14T22:13:50.500+00:00 (since 2023-11-14T22:13:20.000+00:00, "
        "ejection 2 in a row): consecutive_failures: 5"
    )
    assert aggregated(checks) == "critical"  # so ?passing leaves it out
    assert aggregated(checks_of(_inst(drained=True), "web", "dc", 3, ejection)) == "maintenance"
    labels = target_group(_inst(), "web", aggregated(checks))["labels"]
    assert labels["__meta_baton_health"] == "critical"


def test_rendered_fields_prometheus_and_traefik_read() -> None:
    inst = _inst(metadata={"consul.tags": "a,b", "consul.weights": "5,1", "team": "x"})
    entry = health_entry(inst, "web", "dc1", 9)
    node, svc = entry["Node"], entry["Service"]
    assert node["Address"] == node["Node"] == "10.0.0.1"
    assert len(node["ID"]) == 36  # a UUID, stable per host
    assert health_entry(inst, "web", "dc1", 10)["Node"]["ID"] == node["ID"]
    assert svc["ID"] == "web-1"
    assert svc["Address"] == "10.0.0.1"
    assert svc["Port"] == 8080
    assert svc["Tags"] == ["a", "b"]
    assert svc["Meta"] == {"team": "x"}  # Baton's own consul.* keys stay hidden
    assert svc["Weights"] == {"Passing": 5, "Warning": 1}
    flat = catalog_entry(inst, "web", "dc1", 9)
    assert (flat["ServiceID"], flat["ServicePort"], flat["Node"]) == ("web-1", 8080, "10.0.0.1")


def test_registration_rebuilt_from_the_registry_listing() -> None:
    svc = parse_registration(
        {
            "Name": "web",
            "ID": "web-1",
            "Port": 80,
            "Tags": ["t"],
            "Weights": {"Passing": 3},
            "Check": {"TTL": "4s", "Status": "warning"},
        },
        caller="10.0.0.1",
    )
    reg = registration_for(svc, "warning")
    listed = _inst(port=80, weight=reg.weight, metadata=reg.metadata, ttl_s=4.0)
    again = from_instance("web", listed)
    assert registration_for(again, "passing") == registration_for(svc, "passing")


class _View:
    def __init__(self) -> None:
        self.index = 5
        self.moved = asyncio.Event()

    def service_index(self, name: str) -> int:
        return {"web": 4}.get(name, 1)

    async def wait(self, after: int, timeout_s: float, service: str | None = None) -> int:
        del service
        try:
            await asyncio.wait_for(self.moved.wait(), timeout_s)
        except TimeoutError:
            return after
        return self.index


def test_blocking_params() -> None:
    assert blocking_params({}) == (None, 300.0)
    assert blocking_params({"index": "7", "wait": "120000ms"}) == (7, 120.0)
    assert blocking_params({"wait": "1h"}) == (None, MAX_WAIT_S)
    with pytest.raises(BadRequest, match="whole number"):
        blocking_params({"index": "-3"})
    with pytest.raises(BadRequest, match="not a duration"):
        blocking_params({"wait": "30"})


async def test_block_answers_at_once_unless_the_index_is_current() -> None:
    view = _View()
    assert await block(view, None, 300, None) == 5
    assert await block(view, 3, 300, "web") == 4  # news since 3
    assert await block(view, 9, 300, "web") == 4  # ahead of the gateway: reset at once
    assert await block(view, 4, 0.01, "web") == 4  # nothing new: back at the wait
    waiting = asyncio.ensure_future(block(view, 5, 300, None))
    await asyncio.sleep(0)
    view.index = 6
    view.moved.set()
    assert await waiting == 6


def test_prometheus_target_groups_label_as_consul_does() -> None:
    inst = _inst(
        zone="z1",
        metadata={"consul.tags": "a,b", "consul.status": "passing", "app.kubernetes/name": "w"},
    )
    group = target_group(inst, "web", "passing")
    assert group["targets"] == ["10.0.0.1:8080"]
    labels = group["labels"]
    assert labels["__meta_baton_service_id"] == "web-1"
    assert labels["__meta_baton_tags"] == ",a,b,"  # Consul's separators: `.*,a,.*` matches
    assert labels["__meta_baton_metadata_app_kubernetes_name"] == "w"
    assert not any(k.startswith("__meta_baton_metadata_consul") for k in labels)
    ipv6 = target_group(_inst(host="fd00::1"), "web", "critical")
    assert ipv6["targets"] == ["[fd00::1]:8080"]


def test_http_tcp_grpc_checks_become_the_prober_s_with_consul_defaults() -> None:
    svc = parse_registration(
        {
            "Name": "web",
            "ID": "web-1",
            "Address": "10.0.0.5",
            "Port": 8080,
            "Weights": {"Passing": 10, "Warning": 1},
            "Checks": [
                {
                    "HTTP": "http://10.0.0.5:8080/actuator/health",
                    "Interval": "10s",
                    "Timeout": "30s",
                    "Method": "POST",
                    "Header": {"X-Api-Key": ["k"]},
                    "Body": "{}",
                    "TLSSkipVerify": True,
                    "SuccessBeforePassing": 2,
                    "FailuresBeforeCritical": 3,
                    "DeregisterCriticalServiceAfter": "10s",
                },
                {"TCP": "10.0.0.5:5432", "Interval": "5s", "CheckID": "db", "Status": "passing"},
                {"GRPC": "10.0.0.5:50051/orders", "GRPCUseTLS": True, "Interval": "5s"},
                {"TTL": "15s"},
            ],
        },
        caller="10.0.0.9",
    )
    http, tcp, grpc = svc.active
    assert (http.check_id, http.kind, http.method, http.body) == (
        "service:web-1:1",
        "http",
        "POST",
        "{}",
    )
    assert http.headers == {"X-Api-Key": ["k"]}  # header names keep their spelling
    assert (http.tls_skip_verify, http.success_before_passing) == (True, 2)
    assert http.failures_before_critical == 3
    assert http.deregister_critical_after_s == 60  # Consul's one-minute floor
    assert (tcp.check_id, tcp.status) == ("db", "passing")
    assert (grpc.kind, grpc.grpc_use_tls, grpc.status) == ("grpc", True, "critical")
    assert svc.check is not None
    assert svc.check.ttl_s == 15
    reg = registration_for(svc, "passing")
    assert [c.kind for c in reg.checks] == ["http", "tcp", "grpc", "ttl"]
    assert reg.warning_weight == 1
