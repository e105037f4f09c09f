"""The collector worker: what the fleet says on NATS, written to InfluxDB as time series.

It only listens (queue group `collector`, so replicas share the work and every point is
written once) and never answers, so it is never in the way of the request path. Points go
through a bounded buffer that batches and retries (batcher.py), so an InfluxDB outage of
minutes loses nothing up to the buffer's size, and anything beyond it is counted.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Annotated

from msgspec import Meta, Struct

from schemas import subjects
from schemas.balancer import CallReport, CallReports, OutlierEvent, PickCounts
from schemas.checks import CheckResult
from schemas.governor import ConfigApplied
from schemas.registry import Empty, Heartbeat, InstanceEvent, ServiceList
from services.collector import points
from services.collector.batcher import Batcher
from services.collector.writer import (
    InfluxWriter,
    RetryableWriteError,
    SetupError,
    V1Writer,
    V2Writer,
)
from services.errors import BatonError, NotFound, StartupError
from services.lifecycle import Lifecycle
from services.pages import pages
from services.retry import Backoff

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus

__all__ = ["Collector", "CollectorSettings"]


SETUP_RETRY_CAP_S = 30.0  # InfluxDB set-up is retried from setup_retry_s up to this


class CollectorSettings(Struct, frozen=True, kw_only=True):
    """Environment: INFLUX_<FIELD>. With INFLUX_TOKEN set, the v2 write API is used
    (InfluxDB 1.8+, 2.x, 3.x: INFLUX_ORG, INFLUX_BUCKET); otherwise the v1 API (InfluxDB
    1.x: INFLUX_DATABASE, optional INFLUX_USER and INFLUX_PASSWORD)."""

    url: str = "http://127.0.0.1:8086"
    database: str = "baton"
    user: str = ""
    password: str = ""
    token: str = ""
    org: str = ""
    bucket: str = "baton"
    # a batch is written when this many points wait, or every flush_s, whichever first
    batch_points: Annotated[int, Meta(ge=1, le=100_000)] = 5000
    flush_s: Annotated[float, Meta(gt=0)] = 1.0
    # batches written side by side: InfluxDB ingests one while the next is sent
    writes: Annotated[int, Meta(ge=1, le=16)] = 2
    # points held while InfluxDB is away; beyond it the oldest are dropped (and counted)
    buffer_points: Annotated[int, Meta(ge=1)] = 1_000_000
    # the collector's own health point this often
    health_s: Annotated[float, Meta(gt=0)] = 10.0
    # retry InfluxDB set-up (create the database, check the bucket) until done: first
    # after this long, then growing with jitter up to 30 s (services/retry.py)
    setup_retry_s: Annotated[float, Meta(gt=0)] = 2.0
    timeout_s: Annotated[float, Meta(gt=0)] = 10.0

    @property
    def api(self) -> str:
        return "v2" if self.token else "v1"


def make_writer(settings: CollectorSettings) -> InfluxWriter:
    if settings.token:
        return V2Writer(
            settings.url,
            settings.token,
            settings.org,
            settings.bucket,
            timeout_s=settings.timeout_s,
        )
    return V1Writer(
        settings.url,
        settings.database,
        user=settings.user,
        password=settings.password,
        timeout_s=settings.timeout_s,
    )


class Collector(Lifecycle):
    def __init__(
        self,
        bus: Bus,
        settings: CollectorSettings,
        log: FilteringBoundLogger,
        *,
        writer: InfluxWriter | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.log = log
        self.node = secrets.token_hex(4)
        self.writer = writer or make_writer(settings)
        self.batcher = Batcher(
            self.writer,
            log,
            batch_points=settings.batch_points,
            flush_s=settings.flush_s,
            max_buffer=settings.buffer_points,
            writers=settings.writes,
        )
        self.clock = points.Clock()
        self.lines = points.Lines()
        self.zones: dict[tuple[str, str], str] = {}
        self.ready = asyncio.Event()  # InfluxDB is set up and the batcher writes

    async def start(self) -> None:
        self.on_close(self.writer.aclose)  # the last thing to go
        try:
            await self.writer.ensure()
        except SetupError as exc:
            raise StartupError(str(exc)) from exc
        except RetryableWriteError as exc:  # InfluxDB not up yet: buffer, and keep trying
            self.log.warning("collector.influx_unreachable", url=self.settings.url, error=str(exc))
            self.on_close(self._unwritten)
            self.spawn(self._setup_later(), "collector.setup")
        else:
            await self._begin_writing()
        # listen(): plain functions, no coroutine a message; the queue group shares the work
        listen = self.owned(self.bus.listen)
        q = "collector"
        await listen(subjects.HEARTBEAT, Heartbeat, self._on_heartbeat, queue=q)
        await listen(subjects.REPORT, CallReport, self._on_report, queue=q)
        await listen(subjects.REPORTS, CallReports, self._on_reports, queue=q)
        await listen(subjects.PICKS, PickCounts, self._on_picks, queue=q)
        await listen(subjects.EVENTS, InstanceEvent, self._on_event, queue=q)
        await listen(subjects.APPLIED, ConfigApplied, self._on_applied, queue=q)
        await listen(subjects.BALANCER_EVENTS, OutlierEvent, self._on_outlier, queue=q)
        await listen(subjects.PROBER_RESULTS, CheckResult, self._on_check, queue=q)
        self.spawn(self._learn_zones(), "collector.zones")
        self.spawn(self._health_loop(), "collector.health")
        self.log.info("collector.ready", api=self.settings.api, url=self.settings.url)

    async def _unwritten(self) -> None:
        if not self.ready.is_set():
            self.log.warning("collector.unwritten", points=self.batcher.stats["buffered"])

    async def _last_health(self) -> None:
        self.batcher.add(points.collector_health(self.node, self.stats, self.clock()))

    async def _begin_writing(self) -> None:
        # the batcher writes what is buffered when it is left, the last health point too
        await self.enter(self.batcher)
        self.on_close(self._last_health)
        self.ready.set()
        self.log.info("collector.writing", api=self.settings.api)

    async def _setup_later(self) -> None:
        base = self.settings.setup_retry_s
        retry = Backoff(base_s=base, cap_s=max(base, SETUP_RETRY_CAP_S)).retry()
        while True:
            await retry.wait()
            try:
                await self.writer.ensure()
            except SetupError as exc:
                self.log.error("collector.setup_failed", error=str(exc), attempt=retry.attempts)  # noqa: TRY400  # the sentence is enough
            except RetryableWriteError as exc:
                self.log.warning(
                    "collector.influx_unreachable", error=str(exc), attempt=retry.attempts
                )
            else:
                await self._begin_writing()
                return

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.batcher.stats)

    # -- what the fleet says: the hot path, one call a message ----------------------------
    def _on_heartbeat(self, service: str, hb: Heartbeat) -> None:
        zone = self.zones.get((service, hb.instance_id), "")
        self.batcher.add(self.lines.load(service, hb, zone, self.clock()))

    def _on_report(self, service: str, report: CallReport) -> None:
        zone = self.zones.get((service, report.instance_id), "")
        self.batcher.add(self.lines.call(service, report, zone, self.clock()))

    def _on_reports(self, service: str, batch: CallReports) -> None:
        reports = batch.reports
        ts = self.clock.reserve(len(reports))
        lines, bad = self.lines.calls(service, reports, self.zones, ts)
        self.batcher.add_many(lines)
        if bad:  # the rest of the batch is written; these are counted and logged
            self.bus.errors[(subjects.every(subjects.REPORTS), 400)] += len(bad)
            self.log.warning(
                "report.dropped",
                service=service,
                reports=len(bad),
                reason=f"instance_id {bad[0]!r} breaks the name rule: {subjects.NAME_RULE}",
            )

    def _on_picks(self, _service: str, counts: PickCounts) -> None:
        self.batcher.add_many(points.picks(counts, self.clock()))

    def _on_event(self, service: str, event: InstanceEvent) -> None:
        key = (service, event.instance.instance_id)
        if event.kind in ("expired", "deregistered"):
            self.zones.pop(key, None)
        else:
            self.zones[key] = event.instance.zone
        self.batcher.add(points.registry_event(event, self.clock()))

    def _on_applied(self, _service: str, entry: ConfigApplied) -> None:
        self.batcher.add(points.config_change(entry, self.clock()))

    def _on_outlier(self, _service: str, event: OutlierEvent) -> None:
        self.batcher.add(points.outlier_event(event, self.clock()))

    def _on_check(self, service: str, result: CheckResult) -> None:
        self.batcher.add_many(points.check_result(service, result, self.clock.reserve(2)))

    async def _learn_zones(self) -> None:
        """Zones of instances registered before the collector started (best effort), read
        a page at a time as the balancer's sync reads them."""
        try:
            listed = await self.bus.request(subjects.SERVICES, Empty(), ServiceList)
            for service in listed.services:
                try:
                    async for page in pages(self.bus, service):
                        for inst in page.instances:
                            self.zones.setdefault((service, inst.instance_id), inst.zone)
                except NotFound:  # emptied since it was listed
                    continue
        except BatonError as exc:
            self.log.info("collector.zones_unknown", error=exc.message)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_s)
            self.batcher.add(points.collector_health(self.node, self.stats, self.clock()))
