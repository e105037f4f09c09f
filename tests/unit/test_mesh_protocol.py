"""The ADS stream's rules (services/mesh/protocol.py), with real DiscoveryRequests."""

from __future__ import annotations

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest
from google.rpc.status_pb2 import Status

from services.mesh.protocol import (
    CLUSTER,
    ENDPOINT,
    Outgoing,
    Resource,
    Snapshot,
    StreamState,
)


def snap(version: str, clusters: dict[str, str], endpoints: dict[str, str]) -> Snapshot:
    return Snapshot(
        version,
        {
            CLUSTER: {n: Resource(f"c:{n}:{v}", v) for n, v in clusters.items()},
            ENDPOINT: {n: Resource(f"e:{n}:{v}", v) for n, v in endpoints.items()},
        },
    )


def ask(
    type_url: str, names: list[str] | None = None, nonce: str = "", version: str = ""
) -> DiscoveryRequest:
    if names is None:
        names = []
    return DiscoveryRequest(
        type_url=type_url, resource_names=names, response_nonce=nonce, version_info=version
    )


def nack(type_url: str, nonce: str, accepted: str, names: list[str] = []) -> DiscoveryRequest:  # noqa: B006
    request = ask(type_url, names, nonce, accepted)
    request.error_detail.CopyFrom(Status(code=3, message="bad cluster"))
    return request


def values(out: Outgoing) -> list[object]:
    return [r.value for r in out.resources]


S1 = snap("v1", {"api": "1", "web": "1"}, {"api": "1", "web": "1"})


def test_a_wildcard_cds_request_gets_every_cluster_then_an_ack_gets_nothing() -> None:
    stream = StreamState(S1)
    [out] = stream.on_request(ask(CLUSTER))
    assert (out.type_url, out.version) == (CLUSTER, "v1")
    assert values(out) == ["c:api:1", "c:web:1"]
    assert stream.on_request(ask(CLUSTER, nonce=out.nonce, version="v1")) == []


def test_eds_sends_only_the_names_asked_for_and_a_new_name_is_answered() -> None:
    stream = StreamState(S1)
    [out] = stream.on_request(ask(ENDPOINT, ["api"]))
    assert values(out) == ["e:api:1"]
    [more] = stream.on_request(ask(ENDPOINT, ["api", "web"], out.nonce, "v1"))
    assert values(more) == ["e:api:1", "e:web:1"]
    assert more.nonce != out.nonce


def test_nonces_are_per_type_and_a_stale_nonce_is_ignored() -> None:
    stream = StreamState(S1)
    [c] = stream.on_request(ask(CLUSTER))
    [e] = stream.on_request(ask(ENDPOINT, ["api"]))
    # an endpoint request answering the cluster response's nonce is stale
    assert stream.on_request(ask(ENDPOINT, ["api", "web"], c.nonce, "v1")) == []
    assert stream.stale == 1
    assert stream.on_request(ask(ENDPOINT, ["api"], e.nonce, "v1")) == []


def test_a_change_pushes_only_the_types_and_clients_it_touches() -> None:
    stream = StreamState(S1)
    [c] = stream.on_request(ask(CLUSTER))
    [e] = stream.on_request(ask(ENDPOINT, ["api"]))
    # web's endpoints changed: this client asked only for api's, and clusters are the same
    assert stream.on_snapshot(snap("v2", {"api": "1", "web": "1"}, {"api": "1", "web": "2"})) == []
    # api's endpoints changed: only EDS goes out, with the new version and a new nonce
    [push] = stream.on_snapshot(snap("v3", {"api": "1", "web": "1"}, {"api": "2", "web": "2"}))
    assert (push.type_url, push.version, values(push)) == (ENDPOINT, "v3", ["e:api:2"])
    assert push.nonce not in {c.nonce, e.nonce}
    # a cluster gone: the wildcard client gets the list without it
    [gone] = stream.on_snapshot(snap("v4", {"api": "1"}, {"api": "2"}))
    assert (gone.type_url, values(gone)) == (CLUSTER, ["c:api:1"])


def test_a_nack_is_reported_not_answered_and_the_accepted_version_stays() -> None:
    stream = StreamState(S1)
    [first] = stream.on_request(ask(CLUSTER))
    assert stream.on_request(ask(CLUSTER, nonce=first.nonce, version="v1")) == []
    [push] = stream.on_snapshot(snap("v2", {"api": "2", "web": "1"}, {}))
    assert stream.on_request(nack(CLUSTER, push.nonce, accepted="v1")) == []
    [report] = stream.take_nacks()
    assert (report.type_url, report.rejected, report.accepted) == (CLUSTER, "v2", "v1")
    assert report.error == "bad cluster"
    assert stream.take_nacks() == []
    assert stream.types[CLUSTER].accepted == "v1"
    assert stream.types[CLUSTER].nacks == 1
    # the next change is sent: the client may accept that one
    [fixed] = stream.on_snapshot(snap("v3", {"api": "3", "web": "1"}, {}))
    assert fixed.version == "v3"


def test_types_never_asked_for_are_never_pushed() -> None:
    stream = StreamState(S1)
    stream.on_request(ask(ENDPOINT, ["api"]))
    out = stream.on_snapshot(snap("v2", {"api": "9"}, {"api": "1"}))
    assert out == []
