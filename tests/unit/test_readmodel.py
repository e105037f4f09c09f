"""The read model's change notifications: what a subscriber (the balancer's pools, later
the console, the mesh, the prober) is told, in order, and what it is not told.

Fed directly, as test_view_and_responder.py feeds the view (no NATS traffic).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from builders import instance
from test_view_and_responder import Wall, configure, outliers, view, with_

from schemas.governor import ServiceConfig

if TYPE_CHECKING:
    from services.view import Change


async def test_subscribers_hear_every_visible_change_in_order_with_its_index() -> None:
    wall = Wall()
    v = view(wall=wall)
    heard: list[Change] = []
    stop = v.subscribe(heard.append)
    a = instance("a")
    v.upsert("api", a)
    v.upsert("api", with_(a, inflight=3, last_seen=a.last_seen + timedelta(seconds=1)))
    v.upsert("api", with_(a, drained=True))
    await configure(v, ServiceConfig(service="api", strategy="round_robin"))
    v.take_outliers("api", outliers(a=wall.now + 30), seq=1)
    v.remove("api", "a")
    assert [(c.kind, c.service, c.instance_id) for c in heard] == [
        ("instance", "api", "a"),  # its load and heartbeat time moved nothing: not told
        ("instance", "api", "a"),
        ("config", "api", ""),
        ("ejections", "api", ""),
        ("removed", "api", "a"),
    ]
    indexes = [c.index for c in heard]
    assert indexes == sorted(set(indexes))  # each took the next index
    assert indexes[-1] == v.index
    stop()
    v.upsert("api", a)
    assert len(heard) == 5  # unsubscribed: told nothing more


async def test_a_record_that_ejects_no_one_is_told_without_moving_the_index() -> None:
    wall = Wall()
    v = view(wall=wall)
    v.upsert("api", instance("a"))
    heard: list[Change] = []
    v.subscribe(heard.append)
    at = v.index
    v.take_outliers("api", outliers(), seq=1)  # only the cap holding an outlier
    assert [(c.kind, c.index) for c in heard] == [("ejections", at)]
    assert v.index == at


async def test_a_failing_subscriber_stops_neither_the_model_nor_the_others() -> None:
    v = view()
    heard: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError(change.kind)

    v.subscribe(broken)
    v.subscribe(heard.append)
    v.upsert("api", instance("a"))
    v.upsert("api", instance("b"))
    assert [c.instance_id for c in heard] == ["a", "b"]
    assert set(v.services["api"].instances) == {"a", "b"}
