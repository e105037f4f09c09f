"""The mesh worker: serves the fleet to Envoy and proxyless gRPC as an xDS control plane.

ADS (xDS v3, state of the world) over gRPC on MESH_BIND:MESH_XDS_PORT. It follows the
fleet through its own read model (services/view: the registry, the config log, the
balancers' ejections), never asking the balancer per request. Every change of the view
rebuilds the snapshot (resources.py) once per burst; each stream decides what its client
gets of it (protocol.py: versions and nonces per type, ACK/NACK, only the names asked for).
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Annotated, Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc
from google.protobuf import duration_pb2
from msgspec import Meta, Struct

from schemas import subjects
from schemas.balancer import CallReports
from services.errors import StartupError
from services.lifecycle import Lifecycle
from services.mesh.loads import reports_of
from services.mesh.protocol import StreamState
from services.mesh.resources import build_snapshot
from services.view import RegistryView

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus
    from services.mesh.protocol import Outgoing, Snapshot
    from services.view import Change

__all__ = ["Mesh", "MeshSettings"]


class MeshSettings(Struct, frozen=True, kw_only=True):
    """Environment: MESH_<FIELD>, e.g. MESH_XDS_PORT=18000."""

    # the ADS port (0: one the OS picks, as tests do)
    xds_port: Annotated[int, Meta(ge=0, le=65535)] = 18000
    # loopback by default, as the gateway's GATEWAY_BIND: xDS has no authentication here
    bind: str = "127.0.0.1"
    # the read model's registry deadline, full re-read, and wait for config and ejections
    registry_timeout_s: Annotated[float, Meta(gt=0)] = 2.0
    resync_s: Annotated[float, Meta(gt=0)] = 300.0
    config_wait_s: Annotated[float, Meta(ge=0)] = 5.0
    # how long a stopping worker lets streams end before cutting them
    grace_s: Annotated[float, Meta(ge=0)] = 1.0
    # how often Envoy sends its load reports (LRS), turned into call reports
    load_interval_s: Annotated[float, Meta(gt=0)] = 1.0


class Mesh(Lifecycle):
    def __init__(self, bus: Bus, settings: MeshSettings, log: FilteringBoundLogger) -> None:
        self.settings = settings
        self.log = log
        self.bus = bus
        self.reports_sent = 0  # call reports published from Envoy's load reports
        self.view = RegistryView.for_worker(bus, log, settings, name="mesh")
        self.snapshot = build_snapshot(())
        self.port = 0  # the bound port
        self.nacks: collections.Counter[str] = collections.Counter()  # by type URL
        self.streams: dict[int, asyncio.Queue[Snapshot | discovery_pb2.DiscoveryRequest]] = {}
        self._dirty = asyncio.Event()
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        # no SO_REUSEPORT (grpc's default is on): a port already taken is an error at
        # start, not a second server silently sharing it
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Ads(self), server)
        lrs_pb2_grpc.add_LoadReportingServiceServicer_to_server(_Lrs(self), server)
        address = f"{self.settings.bind}:{self.settings.xds_port}"
        try:
            self.port = server.add_insecure_port(address)  # bound now, served later
        except RuntimeError as exc:
            raise StartupError(f"cannot bind the xDS port {address}: {exc}") from exc
        self._server = server
        self.on_close(self._stop_server)
        await self.enter(self.view)
        self.on_close(_unsubscribe(self.view.subscribe(self._on_change)))
        self.spawn(self._rebuild_loop(), "mesh.rebuild")
        self.spawn(self._serve_once_synced(server), "mesh.serve")

    async def _serve_once_synced(self, server: grpc.aio.Server) -> None:
        """Serve only once the registry's snapshot is in: an empty fleet sent to Envoy
        would remove every cluster, while an xDS server it cannot reach leaves it running
        on what it last had."""
        await self.view.synced.wait()
        self._rebuild()
        await server.start()
        self.log.info("mesh.ready", bind=self.settings.bind, port=self.port)

    async def _stop_server(self) -> None:
        if self._server is not None:
            await self._server.stop(self.settings.grace_s)

    # -- the snapshot, rebuilt on every change of the view --------------------------------
    def _on_change(self, _change: Change) -> None:
        self._dirty.set()

    async def _rebuild_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()  # a burst of changes (a snapshot applied) makes one rebuild
            await asyncio.sleep(0)
            self._rebuild()

    def _rebuild(self) -> None:
        snapshot = build_snapshot(self.view.services.values())
        if snapshot.version == self.snapshot.version:
            return
        self.snapshot = snapshot
        self.log.debug("mesh.snapshot_built", version=snapshot.version, streams=len(self.streams))
        for queue in self.streams.values():
            queue.put_nowait(snapshot)

    # -- one ADS stream -------------------------------------------------------------------
    async def stream(
        self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest], peer: str
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        queue: asyncio.Queue[Snapshot | discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        key = id(queue)
        self.streams[key] = queue
        state = StreamState(self.snapshot)
        node = ""

        async def read() -> None:
            try:
                async for request in requests:
                    queue.put_nowait(request)
            except Exception:  # the stream broke: that client's, logged; the others go on
                self.log.exception("mesh.stream_broken", node=node, peer=peer)

        reader = asyncio.create_task(read(), name="mesh.read")
        try:
            while True:
                item = await _next(queue, reader)
                if item is None:
                    break
                if isinstance(item, discovery_pb2.DiscoveryRequest):
                    if not node and item.node.id:
                        node = item.node.id
                        self.log.info(
                            "mesh.client_connected",
                            node=node,
                            peer=peer,
                            zone=item.node.locality.zone,
                        )
                    out = state.on_request(item)
                    self._report(state, node)
                elif state.snapshot is not self.snapshot:
                    # the newest, not the queued one: a client behind a burst of changes
                    # gets one push, and the rest of the burst's snapshots are no-ops
                    out = state.on_snapshot(self.snapshot)
                else:
                    out = []
                for response in out:
                    yield _response(response)
        finally:
            del self.streams[key]
            reader.cancel()
            self.log.info("mesh.client_gone", node=node, peer=peer)

    # -- one LRS stream: Envoy's load reports become call reports ------------------------
    def load_settings(self) -> lrs_pb2.LoadStatsResponse:
        interval = duration_pb2.Duration()
        interval.FromNanoseconds(int(self.settings.load_interval_s * 1e9))
        return lrs_pb2.LoadStatsResponse(
            send_all_clusters=True,
            load_reporting_interval=interval,
            report_endpoint_granularity=True,
        )

    def instance_at(self, service: str, host: str, port: int) -> str | None:
        state = self.view.services.get(service)
        if state is None:
            return None
        for instance in state.instances.values():
            if instance.host == host and instance.port == port:
                return instance.instance_id
        return None

    async def on_loads(self, request: lrs_pb2.LoadStatsRequest) -> None:
        for service, reports in reports_of(request.cluster_stats, self.instance_at).items():
            # a publish that fails raises to the stream, which logs it and goes on
            await self.bus.publish(subjects.reports(service), CallReports(reports=reports))
            self.reports_sent += len(reports)

    def _report(self, state: StreamState, node: str) -> None:
        for nack in state.take_nacks():
            self.nacks[nack.type_url] += 1
            self.log.warning(
                "mesh.nacked",
                node=node,
                type_url=nack.type_url,
                rejected=nack.rejected,
                accepted=nack.accepted,
                error=nack.error,
            )


async def _next(queue: asyncio.Queue[Any], reader: asyncio.Task[None]) -> Any:
    """The next request or snapshot; None once the client closed its side."""
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()
    return None  # the client closed its side, or the stream broke


def _response(out: Outgoing) -> discovery_pb2.DiscoveryResponse:
    return discovery_pb2.DiscoveryResponse(
        version_info=out.version,
        nonce=out.nonce,
        type_url=out.type_url,
        resources=[r.value for r in out.resources],
    )


def _unsubscribe(unsubscribe: Any) -> Any:
    async def close() -> None:
        unsubscribe()

    return close


class _Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    async def StreamAggregatedResources(  # noqa: N802  # the generated stub's name
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        # an async generator itself: grpc.aio serves a stream only from one
        async for response in self.mesh.stream(request_iterator, context.peer()):
            yield response


class _Lrs(lrs_pb2_grpc.LoadReportingServiceServicer):  # type: ignore[misc]
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    async def StreamLoadStats(  # noqa: N802  # the generated stub's name
        self, request_iterator: AsyncIterator[lrs_pb2.LoadStatsRequest], context: Any
    ) -> AsyncIterator[lrs_pb2.LoadStatsResponse]:
        node = ""
        async for request in request_iterator:
            if not node:
                node = request.node.id
                self.mesh.log.info("mesh.loads_connected", node=node, peer=context.peer())
                yield self.mesh.load_settings()  # every cluster, per endpoint, each interval
                continue
            try:
                await self.mesh.on_loads(request)
            except Exception:  # a bad report is that report's: logged, the stream goes on
                self.mesh.log.exception("mesh.loads_bad", node=node)
