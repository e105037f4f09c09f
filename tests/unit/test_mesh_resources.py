"""The fleet as xDS resources (services/mesh/resources.py): the mapping of docs/mesh.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from builders import WALL, instance
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3 import health_check_pb2

from schemas.balancer import STRATEGIES
from schemas.governor import ServiceConfig
from services.mesh.protocol import CLUSTER, ENDPOINT, LISTENER, ROUTE
from services.mesh.resources import LB_POLICIES, build_snapshot, cluster, endpoints
from services.view import ServiceState

if TYPE_CHECKING:
    from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

NOW = WALL.timestamp() + 3600


def state(
    strategy: str = "weighted", *, threshold: float = 0.0, **instances: dict[str, object]
) -> ServiceState:
    config = ServiceConfig(service="api", strategy=strategy, protect_threshold=threshold)
    s = ServiceState("api", config, 1)
    for iid, marks in instances.items():
        s.instances[iid] = instance(iid, **marks)  # type: ignore[arg-type]
    return s


def by_id(assignment: ClusterLoadAssignment) -> dict[str, tuple[str, int, int]]:
    """instance id -> (zone, health, weight)"""
    return {
        lb.metadata.filter_metadata["baton"]["instance_id"]: (
            group.locality.zone,
            lb.health_status,
            lb.load_balancing_weight.value,
        )
        for group in assignment.endpoints
        for lb in group.lb_endpoints
    }


def test_every_strategy_has_an_envoy_policy() -> None:
    assert set(LB_POLICIES) == set(STRATEGIES)
    assert cluster(state("least_response_time")).lb_policy == Cluster.LEAST_REQUEST
    assert cluster(state("consistent_hash")).lb_policy == Cluster.RING_HASH
    assert cluster(state("random")).lb_policy == Cluster.RANDOM
    assert cluster(state("weighted")).type == Cluster.EDS


def test_health_weight_and_zone_follow_the_view() -> None:
    s = state(
        a={"weight": 30, "zone": "z1"},
        b={"drained": True, "zone": "z2"},
        c={"healthy": False, "zone": "z1"},
        d={"weight": 0},
    )
    s.ejected = frozenset({"e"})
    s.instances["e"] = instance("e")
    got = by_id(endpoints(s, NOW))
    assert got == {
        "a": ("z1", health_check_pb2.HEALTHY, 30),
        "b": ("z2", health_check_pb2.DRAINING, 100),
        "c": ("z1", health_check_pb2.UNHEALTHY, 100),
        "d": ("", health_check_pb2.DRAINING, 1),
        "e": ("", health_check_pb2.UNHEALTHY, 100),
    }


def test_panic_sends_the_unhealthy_as_healthy_as_the_balancer_picks_them() -> None:
    s = state(threshold=0.6, a={}, b={"healthy": False})
    assert {v[1] for v in by_id(endpoints(s, NOW)).values()} == {health_check_pb2.HEALTHY}


def test_strategies_without_weights_send_equal_weights() -> None:
    s = state("round_robin", a={"weight": 30}, b={"weight": 70})
    assert {v[2] for v in by_id(endpoints(s, NOW)).values()} == {1}


def test_the_snapshot_version_is_a_digest_of_the_fleet() -> None:
    one = build_snapshot([state(a={})], NOW)
    assert set(one.resources) == {CLUSTER, ENDPOINT, LISTENER, ROUTE}
    assert set(one.resources[LISTENER]) == {"api"}
    same = build_snapshot([state(a={})], NOW)
    assert same.version == one.version  # another replica with the same fleet agrees
    moved = build_snapshot([state(a={"drained": True})], NOW)
    assert moved.version != one.version
    assert moved.resources[CLUSTER]["api"].version == one.resources[CLUSTER]["api"].version
    assert moved.resources[ENDPOINT]["api"].version != one.resources[ENDPOINT]["api"].version
