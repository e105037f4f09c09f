"""The NATS micro pieces that need no server: subjects, names, counts, the replies."""

from __future__ import annotations

import msgspec
import pytest
from nats.micro.service import ServiceStats

from schemas import subjects
from schemas.subjects import InvalidNameError
from services.endpoints import Endpoint
from services.micro import Service, worker_name


def test_srv_subjects_at_three_levels() -> None:
    assert subjects.srv_levels("PING", "baton-registry", "ID1") == (
        "$SRV.PING",
        "$SRV.PING.baton-registry",
        "$SRV.PING.baton-registry.ID1",
    )
    with pytest.raises(ValueError, match="verb 'PONG' is not one of PING, INFO, STATS"):
        subjects.srv("PONG")
    with pytest.raises(ValueError, match="needs its name"):
        subjects.srv("INFO", None, "ID1")
    with pytest.raises(InvalidNameError, match=r"worker name 'baton\.x' contains '\.'"):
        subjects.srv("STATS", "baton.x")


def test_endpoint_names_are_the_last_fixed_token() -> None:
    assert subjects.endpoint_name("balancer.v1.resolve.>") == "resolve"
    assert subjects.endpoint_name("registry.v1.services") == "services"
    assert worker_name("collector") == "baton-collector"


def test_counts_become_the_stats_reply_nats_py_reads() -> None:
    endpoint = Endpoint("balancer.v1.resolve.>", "balancer", {"payload": "ResolveRequest"})
    service = Service(
        "baton-balancer", [endpoint], version="0.1.0", worker_id="ID1", wallclock=lambda: 0.5
    )
    empty = service.stats().endpoints[0]
    assert (empty.num_requests, empty.average_processing_time, empty.last_error) == (0, 0, "")
    endpoint.num_requests, endpoint.processing_time = 4, 1000
    endpoint.failed(404, "service 'x' has no registered instances")
    reply = msgspec.to_builtins(service.stats())
    parsed = ServiceStats.from_dict(reply)  # nats-py's reader: every key it needs is there
    assert parsed.started.isoformat() == "1970-01-01T00:00:00.500000"
    [stats] = parsed.endpoints
    assert (stats.num_requests, stats.num_errors) == (4, 1)
    assert (stats.processing_time, stats.average_processing_time) == (1000, 250)
    assert stats.last_error == "404:service 'x' has no registered instances"
    assert service.info().endpoints[0].metadata == {"payload": "ResolveRequest"}
    assert service.ping().id == "ID1"
