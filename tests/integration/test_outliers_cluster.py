"""Outlier events in a 3-node NATS cluster: the stream keeps 3 copies, subscribers get one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import nats
from barrier import subscribed
from waiting import until
from workers import run_balancer

from schemas import subjects
from schemas.balancer import CallReport, OutlierEvent
from schemas.registry import Instance
from services.balancer import BalancerSettings

if TYPE_CHECKING:
    from natscluster import NatsCluster

SERVICE = "pay"


def instance(iid: str) -> Instance:
    now = datetime.now(UTC)
    return Instance(
        instance_id=iid, host="10.0.0.1", port=9000, weight=100, zone="", version="",
        metadata={}, healthy=True, drained=False, inflight=0, registered_at=now, last_seen=now,
    )  # fmt: skip


async def test_replicas_on_two_nodes_store_three_copies_and_publish_once(
    nats_cluster: NatsCluster,
) -> None:
    await nats_cluster.ready()
    settings = BalancerSettings(resync_s=60, outlier_replicas=3)
    got: list[OutlierEvent] = []

    async def on_msg(msg: Any) -> None:
        got.append(msgspec.json.decode(msg.data, type=OutlierEvent))

    nc = await nats.connect(nats_cluster.urls[2])  # a subscriber on the third node
    try:
        await nc.subscribe(subjects.every(subjects.BALANCER_EVENTS), cb=on_msg)
        await subscribed(nc)
        async with (
            run_balancer(nats_cluster.urls[0], settings) as one,
            run_balancer(nats_cluster.urls[1], settings) as two,
        ):
            both = [one, two]
            await until(
                lambda: all(b.ejector.synced.is_set() for b in both), what="the stream followed"
            )
            for b in both:
                for iid in ("a", "b", "c"):
                    b.view.upsert(SERVICE, instance(iid))  # as the registry sync feeds it
            for _ in range(5):  # both replicas see the fifth failure in a row
                report = CallReport(instance_id="a", latency_ms=1, ok=False)
                await nc.publish(subjects.report(SERVICE), msgspec.json.encode(report))
            await nc.flush()
            await until(
                lambda: all(b.pools[SERVICE].ejected == {"a"} for b in both), what="a ejected"
            )
            await until(lambda: bool(got), what="the event on the third node")
            info = await nc.jetstream().stream_info(subjects.OUTLIER_STREAM)
            assert info.config.num_replicas == 3
            assert info.cluster is not None
            assert len(info.cluster.replicas or []) == 2  # and the leader: three copies
            published = [e for b in both for e in b.ejector.published]
            assert [(e.kind, e.instance_id) for e in published] == [("ejected", "a")]
            await nc.flush()
            assert [(e.kind, e.instance_id) for e in got] == [("ejected", "a")]
    finally:
        await nc.close()
