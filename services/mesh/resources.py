"""The fleet as xDS resources: a cluster, its endpoints, a listener and a route per service.

Built from the read model (services/view) and nothing else, so Envoy and gRPC clients
take traffic where the balancer would: who may take traffic is the view's rule
(`ServiceState.serving`, services/view/eligibility.py), the weight is the one in effect
(`ServiceState.weight`: overrides applied, slow start), panic is the service's own. The
mapping (docs/mesh.md):

- CDS: one EDS cluster per service, named after it, with the load-balancing policy of
  its strategy (`LB_POLICIES`); Envoy's own panic is off, Baton's applies instead (an
  instance Baton lets serve in panic is sent HEALTHY).
- EDS: each instance in the locality of its zone; HEALTHY if it may take traffic, with
  its weight in effect (1 for strategies that ignore weights); DRAINING if drained or at
  weight 0; UNHEALTHY otherwise (failing checks, a missed lease, ejected).
- LDS and RDS for proxyless gRPC: an API listener named after the service, its route
  configuration (named after it too) sending everything to the service's cluster, so a
  channel on `xds:///NAME` reaches it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2

from schemas.balancer import STRATEGY_TRAITS
from services.mesh.protocol import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resource, Snapshot

if TYPE_CHECKING:
    from collections.abc import Iterable

    from google.protobuf.message import Message

    from schemas.registry import Instance
    from services.view import ServiceState

__all__ = ["LB_POLICIES", "build_snapshot", "endpoints", "health_of"]

_Cluster = cluster_pb2.Cluster
# the strategy's Envoy form; most_connections has none (Envoy only ever prefers the
# least loaded), so it falls back to LEAST_REQUEST, as docs/mesh.md says
LB_POLICIES: Final = {
    "round_robin": _Cluster.ROUND_ROBIN,
    "weighted": _Cluster.ROUND_ROBIN,
    "least_connections": _Cluster.LEAST_REQUEST,
    "least_response_time": _Cluster.LEAST_REQUEST,
    "most_connections": _Cluster.LEAST_REQUEST,
    "random": _Cluster.RANDOM,
    "consistent_hash": _Cluster.RING_HASH,
}

HEALTHY: Final[int] = health_check_pb2.HEALTHY
UNHEALTHY: Final[int] = health_check_pb2.UNHEALTHY
DRAINING: Final[int] = health_check_pb2.DRAINING


def health_of(state: ServiceState, instance: Instance, serving: frozenset[str]) -> int:
    """The EDS health status of `instance`; `serving`: who of the service may take traffic."""
    if instance.instance_id in serving:
        return HEALTHY
    if instance.drained or state.weight(instance) <= 0:
        return DRAINING  # the operators took it out: finish what runs, start nothing
    return UNHEALTHY


def cluster(state: ServiceState) -> cluster_pb2.Cluster:
    ads = config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
    policy = LB_POLICIES.get(state.config.strategy, _Cluster.ROUND_ROBIN)
    return cluster_pb2.Cluster(
        name=state.name,
        type=_Cluster.EDS,
        eds_cluster_config=_Cluster.EdsClusterConfig(eds_config=ads),
        lb_policy=policy,
        connect_timeout={"seconds": 1},
        # Baton's panic (protect_threshold) already decided who is HEALTHY
        common_lb_config=_Cluster.CommonLbConfig(
            healthy_panic_threshold=percent_pb2.Percent(value=0.0)
        ),
    )


def endpoints(state: ServiceState, now: float | None = None) -> endpoint_pb2.ClusterLoadAssignment:
    serving = frozenset(i.instance_id for i in state.serving()[0])
    weighted = STRATEGY_TRAITS.get(state.config.strategy, STRATEGY_TRAITS["weighted"]).weights
    zones: dict[str, list[endpoint_components_pb2.LbEndpoint]] = {}
    for instance in sorted(state.instances.values(), key=lambda i: i.instance_id):
        health = health_of(state, instance, serving)
        weight = max(1, state.weight(instance, now)) if weighted else 1
        address = address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                address=instance.host, port_value=instance.port
            )
        )
        zones.setdefault(instance.zone, []).append(
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=address),
                health_status=health,
                load_balancing_weight={"value": weight},
                metadata=_metadata(instance),
            )
        )
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=state.name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(zone=zone),
                lb_endpoints=lbs,
                # gRPC drops a locality without a weight; Envoy reads it only when the
                # cluster asks for locality-weighted balancing (it does not)
                load_balancing_weight={"value": _zone_weight(lbs)},
            )
            for zone, lbs in sorted(zones.items())
        ],
    )


def _zone_weight(lbs: list[endpoint_components_pb2.LbEndpoint]) -> int:
    """The zone's share: the weights of those in it that may take traffic (at least 1)."""
    serving: int = sum(lb.load_balancing_weight.value for lb in lbs if lb.health_status == HEALTHY)
    return max(1, serving)


def _metadata(instance: Instance) -> base_pb2.Metadata:
    meta = base_pb2.Metadata()
    fields = meta.filter_metadata["baton"]
    fields.update({"instance_id": instance.instance_id, "version": instance.version})
    return meta


def route(state: ServiceState) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=state.name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=state.name,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=""),
                        route=route_components_pb2.RouteAction(cluster=state.name),
                    )
                ],
            )
        ],
    )


def listener(state: ServiceState) -> listener_pb2.Listener:
    """An API listener (gRPC's proxyless form): `xds:///NAME` asks for listener NAME."""
    ads = config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=state.name,
        rds=hcm_pb2.Rds(config_source=ads, route_config_name=state.name),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router())
            )
        ],
    )
    return listener_pb2.Listener(
        name=state.name, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(manager))
    )


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _resource(message: Message) -> Resource:
    packed = _pack(message)
    digest = hashlib.blake2b(packed.SerializeToString(deterministic=True), digest_size=8)
    return Resource(packed, digest.hexdigest())


def build_snapshot(services: Iterable[ServiceState], now: float | None = None) -> Snapshot:
    """Every service's four resources; the snapshot's version is a digest of them all,
    so two replicas with the same fleet send the same versions."""
    built: dict[str, dict[str, Resource]] = {CLUSTER: {}, ENDPOINT: {}, LISTENER: {}, ROUTE: {}}
    for state in sorted(services, key=lambda s: s.name):
        built[CLUSTER][state.name] = _resource(cluster(state))
        built[ENDPOINT][state.name] = _resource(endpoints(state, now))
        built[LISTENER][state.name] = _resource(listener(state))
        built[ROUTE][state.name] = _resource(route(state))
    digest = hashlib.blake2b(digest_size=8)
    for type_url in sorted(built):
        for name, resource in sorted(built[type_url].items()):
            digest.update(f"{type_url}\0{name}\0{resource.version}\n".encode())
    return Snapshot(digest.hexdigest(), built)
