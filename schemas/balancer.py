"""Balancer messages of the v1 wire contract."""

from __future__ import annotations

from datetime import datetime  # msgspec needs it at run time
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Final, Literal, NamedTuple

from msgspec import Meta, Struct, field

from schemas.fields import InstanceId, InstanceIds, Key, Millis, Zone

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_STRATEGY",
    "MAX_BATCH",
    "STRATEGIES",
    "STRATEGY_TRAITS",
    "BatchedReport",
    "CallReport",
    "CallReports",
    "Ejected",
    "Ejection",
    "Ejections",
    "Endpoint",
    "OutlierEvent",
    "OutlierState",
    "PickCount",
    "PickCounts",
    "ResolveRequest",
    "Returned",
    "StrategyTraits",
]


class StrategyTraits(NamedTuple):
    """What a strategy reads to pick, besides who may take traffic (docs/contract.md).

    The one table of it is STRATEGY_TRAITS: the balancer's pools and pickers and the
    gateway's DNS answers read it, and no code compares a strategy's name.
    """

    keyed: bool = False  # needs the request's `key`; picks from the service's hash ring
    weights: bool = False  # honours `weight` (weight 0 takes no traffic under any strategy)
    load: bool = False  # follows requests in flight (heartbeats' `inflight`, open picks)
    latency: bool = False  # follows the latency that call reports carry
    capacity: bool = False  # respects metadata `max_inflight`


STRATEGY_TRAITS: Final[Mapping[str, StrategyTraits]] = MappingProxyType(
    {
        "random": StrategyTraits(),
        "round_robin": StrategyTraits(),
        "weighted": StrategyTraits(weights=True),
        "least_connections": StrategyTraits(load=True),
        "least_response_time": StrategyTraits(load=True, latency=True),
        "most_connections": StrategyTraits(load=True, capacity=True),
        "consistent_hash": StrategyTraits(keyed=True, weights=True),
    }
)
STRATEGIES: Final = tuple(STRATEGY_TRAITS)  # the contract's names, in the contract's order
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


MAX_BATCH: Final = 10_000  # reports in one CallReports


class BatchedReport(Struct, frozen=True, kw_only=True, gc=False):
    """A CallReport inside CallReports: the same fields and JSON. Its instance_id is only
    bounded in length when decoded (a pattern check per report cost four times the rest of
    decoding it); readers check the name rule once per distinct id and drop, count and log
    a report that breaks it, so one bad report costs no other."""

    instance_id: Annotated[str, Meta(min_length=1, max_length=64)]
    latency_ms: Millis
    ok: bool = True
    pick: str = ""


class CallReports(Struct, frozen=True, kw_only=True, gc=False):
    """Extension, on `balancer.v1.reports.{service}`: many CallReports in one message, as
    the SDK batches them. Each means exactly what it would mean sent alone."""

    reports: Annotated[list[BatchedReport], Meta(max_length=MAX_BATCH)]


# -- outlier ejection (extension) --------------------------------------------------------
OutlierKind = Literal["ejected", "returned"]


class OutlierEvent(Struct, frozen=True, kw_only=True, gc=False):
    """On `balancer.v1.events.{service}`, published once per ejection and per return."""

    kind: OutlierKind
    service: str
    instance_id: str
    until: datetime  # when the ejection ends (for `returned`: when it was due to)
    reason: str
    at: datetime
    ejections: int  # ejections in a row: the ejection lasted base_ejection_s x this
    ejected: int  # instances of the service ejected once this applies
    node: str  # the balancer replica that decided


class Ejected(Struct, frozen=True, kw_only=True, gc=False):
    instance_id: str
    since: datetime
    until: datetime
    reason: str
    ejections: int


class Ejections(Struct, frozen=True, kw_only=True, gc=False):
    """Reply of `balancer.v1.ejections.{service}`: who is ejected now, and the cap."""

    service: str
    ejected: list[Ejected]
    max_ejected: int  # the cap for the instances the balancer knows now
    # outliers the cap kept serving in the last interval (Endpoint.panic says so too)
    held: list[str] = field(default_factory=list)


class Ejection(Struct, frozen=True, kw_only=True, gc=False):
    since: float  # Unix seconds
    until: float
    reason: str
    times: int


class Returned(Struct, frozen=True, kw_only=True, gc=False):
    at: float  # Unix seconds
    times: int  # the ejections in a row when it returned


class OutlierState(Struct, frozen=True, kw_only=True, gc=False):
    """A service's ejections as the balancers store them (stream BATON_OUTLIERS, one
    subject per service, written with compare-and-set): the one truth every replica
    applies, so replicas agree and each change is published once."""

    ejected: dict[str, Ejection] = field(default_factory=dict)
    returned: dict[str, Returned] = field(default_factory=dict)  # for the multiplier
    held: dict[str, float] = field(default_factory=dict)  # id -> when the cap kept it


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
