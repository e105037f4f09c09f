"""Balancer messages of the v1 wire contract."""

from __future__ import annotations

from typing import Final

from msgspec import Struct, field

from schemas.fields import InstanceId, InstanceIds, Key, Millis, Zone

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "CallReport",
    "Endpoint",
    "PickCount",
    "PickCounts",
    "ResolveRequest",
]

STRATEGIES: Final = (
    "random",
    "round_robin",
    "weighted",
    "least_connections",
    "least_response_time",
    "most_connections",
    "consistent_hash",
)
# The strategy of a service that no operator has configured (ServiceConfig revision 0):
# it honours operators' weights and interleaves smoothly.
DEFAULT_STRATEGY: Final = "weighted"


class ResolveRequest(Struct, frozen=True, kw_only=True, gc=False):
    key: Key | None = None
    zone: Zone | None = None
    exclude: InstanceIds = field(default_factory=list)
    strategy: str | None = None  # checked by the balancer so the error can list the names
    # extension: false = a pick nobody will report (the gateway's DNS answers): it is not
    # counted in flight, and the Endpoint carries no pick token
    track: bool = True


class Endpoint(Struct, frozen=True, kw_only=True, gc=False):
    instance_id: str
    host: str
    port: int
    zone: str
    metadata: dict[str, str]
    strategy: str
    panic: bool = False
    # extension: echo it in the CallReport so the balancer that picked this endpoint
    # closes exactly this pick (it counts as in flight until then).
    pick: str = ""
    version: str = ""  # extension
    weight: int = 100  # extension


class CallReport(Struct, frozen=True, kw_only=True, gc=False):
    instance_id: InstanceId
    latency_ms: Millis
    ok: bool = True
    pick: str = ""  # extension: the Endpoint's `pick`


class PickCount(Struct, frozen=True, kw_only=True, gc=False):
    instance_id: str
    strategy: str
    count: int
    weight: int  # the instance's weight (after overrides) when the interval closed


class PickCounts(Struct, frozen=True, kw_only=True, gc=False):
    """Extension, on `balancer.v1.picks.{service}`: what one balancer picked in one
    interval, so the collector records picks without an event per resolve."""

    service: str
    node: str  # the balancer replica
    interval_s: float
    picks: list[PickCount]
