"""The state-of-the-world ADS protocol of one stream, as pure logic: what to send when.

xDS v3 (Envoy's `api/envoy/service/discovery/v3/discovery.proto`): a client opens one
stream and, per resource type (its type URL), asks for names (an empty list of a CDS or
LDS request is the wildcard: every resource of the type). Each response carries a
`version_info` and a `nonce`; the client answers each response with a request carrying
that nonce: an ACK repeats the version it applied, a NACK keeps the last version it
accepted and sets `error_detail`. A request whose nonce is not the last one sent for its
type is stale (it answers a response since replaced) and is ignored, as the spec says.

Rules kept here:
- versions and nonces per type URL; the nonce is new on every response;
- an ACK or a NACK is not answered by resending what the client already has; a NACK is
  reported (the caller logs and counts it) and the last accepted version stays;
- only the resources a client asked for are sent (the wildcard types send all);
- on every new snapshot, a type is sent again only if what this client gets of it
  changed (a resource it asked for changed, appeared or left).

`Snapshot` holds each resource as an opaque value with its own version (a digest of its
bytes), so this module knows nothing of protobuf beyond the request's fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "ROUTE",
    "WILDCARD_TYPES",
    "Nack",
    "Outgoing",
    "Request",
    "Resource",
    "Snapshot",
    "StreamState",
]

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# an empty list of names asks for every resource of these types (the others name theirs)
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})


class Request(Protocol):
    """The fields of a DiscoveryRequest this module reads."""

    @property
    def type_url(self) -> str: ...
    @property
    def version_info(self) -> str: ...
    @property
    def response_nonce(self) -> str: ...
    @property
    def resource_names(self) -> Iterable[str]: ...
    def HasField(self, name: str) -> bool: ...  # noqa: N802  # protobuf's name


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource as sent: its value (a packed Any, say) and the version of its bytes."""

    value: object
    version: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every resource the server has now, by type URL then name; `version` names it."""

    version: str
    resources: Mapping[str, Mapping[str, Resource]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A response to send: type URL, version, nonce, and the resources in it."""

    type_url: str
    version: str
    nonce: str
    resources: tuple[Resource, ...]


@dataclass(frozen=True, slots=True)
class Nack:
    """The client refused `rejected` of `type_url`; it still runs `accepted`."""

    type_url: str
    rejected: str
    accepted: str
    error: str


@dataclass(slots=True)
class _TypeState:
    names: frozenset[str] | None = None  # None: the wildcard
    nonce: str = ""  # of the last response sent
    version: str = ""  # of the last response sent
    sent: dict[str, str] = field(default_factory=dict)  # name -> version, last sent
    accepted: str = ""  # the last version the client ACKed
    nacks: int = 0


@dataclass(slots=True)
class StreamState:
    """One client's stream: what it asked for, what it was sent, what it accepted."""

    snapshot: Snapshot
    types: dict[str, _TypeState] = field(default_factory=dict)
    nonces: int = 0
    stale: int = 0  # requests ignored for answering a response since replaced
    nacks: list[Nack] = field(default_factory=list)  # since the caller last took them

    def on_request(self, request: Request) -> list[Outgoing]:
        """The client's request: what to send back (nothing, or one response)."""
        type_url = request.type_url
        state = self.types.get(type_url)
        if state is None:
            state = self.types[type_url] = _TypeState()
        elif request.response_nonce != state.nonce:
            self.stale += 1  # answers a response we replaced since; its successor counts
            return []
        names = frozenset(request.resource_names)
        wanted = None if not names and type_url in WILDCARD_TYPES else names
        first = not state.nonce
        if not first:
            if request.HasField("error_detail"):
                state.nacks += 1
                self.nacks.append(
                    Nack(
                        type_url,
                        rejected=state.version,
                        accepted=request.version_info,
                        error=_error_text(request),
                    )
                )
            else:
                state.accepted = request.version_info
            if wanted == state.names:
                return []  # an ACK or NACK of what it has: nothing new to say
        state.names = wanted
        return [self._respond(type_url, state)]

    def on_snapshot(self, snapshot: Snapshot) -> list[Outgoing]:
        """A new snapshot: a response for each type whose part for this client changed."""
        self.snapshot = snapshot
        out = []
        for type_url, state in self.types.items():
            if state.nonce and self._select(type_url, state) != state.sent:
                out.append(self._respond(type_url, state))
        return out

    def take_nacks(self) -> list[Nack]:
        nacks, self.nacks = self.nacks, []
        return nacks

    def _select(self, type_url: str, state: _TypeState) -> dict[str, str]:
        have = self.snapshot.resources.get(type_url, {})
        names = have.keys() if state.names is None else state.names & have.keys()
        return {name: have[name].version for name in sorted(names)}

    def _respond(self, type_url: str, state: _TypeState) -> Outgoing:
        selected = self._select(type_url, state)
        have = self.snapshot.resources.get(type_url, {})
        self.nonces += 1
        state.nonce = str(self.nonces)
        state.version = self.snapshot.version
        state.sent = selected
        resources = tuple(have[name] for name in selected)
        return Outgoing(type_url, state.version, state.nonce, resources)


def _error_text(request: Request) -> str:
    detail = getattr(request, "error_detail", None)
    return str(getattr(detail, "message", "")) or "(no message)"
