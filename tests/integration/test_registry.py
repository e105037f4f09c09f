"""The registry's subjects, through a real nats-server, as services and clients use them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from conftest import Events, reg

from schemas import subjects
from schemas.errors import ERROR_CODE_HEADER, ERROR_HEADER
from schemas.registry import (
    Ack,
    Deregistration,
    Empty,
    Heartbeat,
    InstanceList,
    InstancesQuery,
    ServiceList,
)
from services.errors import BadRequest, NotFound

if TYPE_CHECKING:
    from nats.aio.client import Client

    from services.bus import Bus

pytestmark = pytest.mark.usefixtures("registry")


async def raw(nc: Client, subject: str, payload: bytes) -> tuple[int, str, dict[str, Any]]:
    """A request as any-language client sends it: the error code, sentence and body."""
    msg = await nc.request(subject, payload, timeout=2)
    headers = msg.headers or {}
    return (
        int(headers.get(ERROR_CODE_HEADER, 0)),
        headers.get(ERROR_HEADER, ""),
        msgspec.json.decode(msg.data),
    )


async def test_register_is_acked_listed_and_announced(bus: Bus, events: Events) -> None:
    ack = await bus.request(
        subjects.register("checkout"),
        reg("c-1", 8080, weight=50, zone="eu-1", version="1.2", metadata={"tier": "gold"}),
        Ack,
    )
    assert (ack.ok, ack.instance_id, ack.ttl_s) == (True, "c-1", 15.0)
    event = await events.wait_for("registered", "c-1")
    assert event.service == "checkout"
    listed = await bus.request(subjects.instances("checkout"), Empty(), InstanceList)
    [inst] = listed.instances
    assert (inst.host, inst.port, inst.weight, inst.zone, inst.version) == (
        "127.0.0.1",
        8080,
        50,
        "eu-1",
        "1.2",
    )
    assert inst.metadata == {"tier": "gold"}
    assert inst.healthy
    assert not inst.drained
    assert inst.registered_at.tzinfo is not None
    services = await bus.request(subjects.SERVICES, Empty(), ServiceList)
    assert services.services == ["checkout"]


async def test_times_are_rfc3339_utc_on_the_wire(nc: Client, bus: Bus) -> None:
    await bus.request(subjects.register("api"), reg("a"), Ack)
    code, _, body = await raw(nc, subjects.instances("api"), b"{}")
    assert code == 0
    assert body["instances"][0]["last_seen"].endswith("Z")


async def test_reregistration_with_changes_is_an_update(bus: Bus, events: Events) -> None:
    await bus.request(subjects.register("api"), reg("a", 8000), Ack)
    await bus.request(subjects.register("api"), reg("a", 8000), Ack)  # same: no event
    await bus.request(subjects.register("api"), reg("a", 9000), Ack)
    await events.wait_for("updated", "a")
    assert events.kinds("a") == ["registered", "updated"]
    listed = await bus.request(subjects.instances("api"), Empty(), InstanceList)
    assert listed.instances[0].port == 9000


async def test_heartbeat_carries_load(bus: Bus) -> None:
    await bus.request(subjects.register("api"), reg("a"), Ack)
    hb = Heartbeat(instance_id="a", inflight=7, cpu=0.5, mem=0.25, latency_ms=12.5)
    await bus.request(subjects.heartbeat("api"), hb, Ack)
    [inst] = (await bus.request(subjects.instances("api"), Empty(), InstanceList)).instances
    assert (inst.inflight, inst.cpu, inst.mem, inst.latency_ms) == (7, 0.5, 0.25, 12.5)


async def test_heartbeat_for_unknown_instance_is_404_so_sender_registers_again(bus: Bus) -> None:
    with pytest.raises(NotFound, match="register it again"):
        await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id="ghost"), Ack)


async def test_deregister_is_idempotent(bus: Bus, events: Events) -> None:
    await bus.request(subjects.register("api"), reg("a"), Ack)
    for _ in range(2):
        ack = await bus.request(subjects.deregister("api"), Deregistration(instance_id="a"), Ack)
        assert ack.ok
    await events.wait_for("deregistered", "a")
    with pytest.raises(NotFound):
        await bus.request(subjects.instances("api"), Empty(), InstanceList)
    assert events.kinds("a") == ["registered", "deregistered"]


async def test_silent_instance_turns_unhealthy_then_expires(bus: Bus, events: Events) -> None:
    loop = asyncio.get_running_loop()
    await bus.request(subjects.register("api"), reg("quiet", ttl_s=1), Ack)
    start = loop.time()
    await events.wait_for("unhealthy", "quiet", timeout=3)
    unhealthy_after = loop.time() - start
    listed = await bus.request(subjects.instances("api"), Empty(), InstanceList)
    assert not listed.instances[0].healthy  # still listed, marked unhealthy
    await events.wait_for("expired", "quiet", timeout=3)
    expired_after = loop.time() - start
    assert 1.0 <= unhealthy_after < 1.5
    assert 2.0 <= expired_after < 2.5
    with pytest.raises(NotFound):
        await bus.request(subjects.instances("api"), Empty(), InstanceList)


async def test_heartbeats_keep_an_instance_healthy_and_revive_it(bus: Bus, events: Events) -> None:
    await bus.request(subjects.register("api"), reg("a", ttl_s=1), Ack)
    for _ in range(6):  # 1.5 s of heartbeats, longer than the ttl
        await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id="a"), Ack)
        await asyncio.sleep(0.25)  # the heartbeat interval under test, not a wait
    assert events.kinds("a") == ["registered"]
    await events.wait_for("unhealthy", "a", timeout=3)
    await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id="a"), Ack)
    await events.wait_for("healthy", "a")


async def test_paged_listing_covers_every_instance_once(bus: Bus) -> None:
    ids = [f"i{n:03d}" for n in range(25)]
    for i in ids:
        await bus.request(subjects.register("big"), reg(i), Ack)
    seen: list[str] = []
    after = ""
    while True:
        page = await bus.request(
            subjects.instances("big"), InstancesQuery(after=after, limit=10), InstanceList
        )
        seen += [i.instance_id for i in page.instances]
        after = page.next_after
        if not after:
            break
    assert seen == ids


@pytest.mark.parametrize(
    ("subject", "payload", "says"),
    [
        (
            "registry.v1.register.api",
            b'{"instance_id":"a","host":"h","port":70000}',
            "port must be 1..65535, got 70000",
        ),
        (
            "registry.v1.register.api",
            b'{"instance_id":"a","host":"h","port":"80"}',
            'port must be 1..65535, got "80"',
        ),
        ("registry.v1.register.api", b'{"host":"h","port":80}', "instance_id is required"),
        (
            "registry.v1.register.api",
            b'{"instance_id":"a.b","host":"h","port":80}',
            "instance_id must be 1 to 64 characters",
        ),
        (
            "registry.v1.register.api",
            b'{"instance_id":"a","host":"h","port":80,"weight":-1}',
            "weight must be an integer 0..10000",
        ),
        (
            "registry.v1.register.api",
            b'{"instance_id":"a","host":"h","port":80,"ttl_s":0}',
            "ttl_s must be a number of seconds 1..3600, got 0",
        ),
        (
            "registry.v1.register.api",
            b'{"instance_id":"a","host":"h","port":80,"metadata":[]}',
            "metadata must be an object",
        ),
        ("registry.v1.register.api", b"{not json", "payload is not valid JSON"),
        ("registry.v1.register.api", b"[1,2]", "must be a Registration as a JSON object"),
        (
            "registry.v1.register.api",
            b'{"instance_id":"a","host":"h","port":80,"service":"other"}',
            "payload names service 'other' but the subject names 'api'",
        ),
        (
            "registry.v1.register.a.b",
            b'{"instance_id":"a","host":"h","port":80}',
            "service name 'a.b' contains '.'",
        ),
        (
            "registry.v1.register.*",
            b'{"instance_id":"a","host":"h","port":80}',
            "service name '*' contains '*'",
        ),
        (
            "registry.v1.register.>",
            b'{"instance_id":"a","host":"h","port":80}',
            "service name '>' contains '>'",
        ),
        (
            "registry.v1.register." + "s" * 65,
            b'{"instance_id":"a","host":"h","port":80}',
            "is 65 characters long",
        ),
        ("registry.v1.heartbeat.api", b'{"instance_id":"a","cpu":2}', "cpu must be a number 0..1"),
        (
            "registry.v1.heartbeat.api",
            b'{"instance_id":"a","inflight":-3}',
            "inflight must be an integer >= 0",
        ),
        ("registry.v1.deregister.api", b"{}", "instance_id is required"),
        ("registry.v1.instances.a.b", b"{}", "service name 'a.b' contains '.'"),
    ],
)
async def test_bad_input_is_answered_400_at_once(
    nc: Client, bus: Bus, subject: str, payload: bytes, says: str
) -> None:
    code, sentence, body = await raw(nc, subject, payload)
    assert code == 400
    assert says in sentence
    assert body == {"code": 400, "message": sentence}
    # ... and the registry carries on
    assert (await bus.request(subjects.register("api"), reg("still-up"), Ack)).ok


async def test_huge_payload_is_rejected(nc: Client) -> None:
    metadata = {f"k{i}": "v" * 1000 for i in range(100)}
    payload = msgspec.json.encode(
        {"instance_id": "a", "host": "h", "port": 1, "metadata": metadata}
    )
    code, sentence, _ = await raw(nc, subjects.register("api"), payload)
    assert code == 400
    assert "the limit is 65536" in sentence


async def test_unknown_fields_are_ignored(nc: Client) -> None:
    payload = b'{"instance_id":"a","host":"h","port":80,"from_the_future":{"x":1}}'
    code, _, body = await raw(nc, subjects.register("api"), payload)
    assert code == 0
    assert body["ok"] is True


async def test_bad_publish_is_counted_and_dropped(nc: Client, bus: Bus, registry: Any) -> None:
    await nc.publish(subjects.register("api"), b'{"instance_id":"x"}')  # no host/port, no reply
    await nc.publish(subjects.heartbeat("api"), b'{"instance_id":"nobody"}')  # unknown
    # each subscription handles its messages in order: these two requests come after both
    assert (await bus.request(subjects.register("api"), reg("ok"), Ack)).ok
    assert (await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id="ok"), Ack)).ok
    codes = {code: n for (_, code), n in registry.bus.errors.items()}
    assert codes == {400: 1, 404: 1}


async def test_unknown_service_listing_is_404(bus: Bus) -> None:
    with pytest.raises(NotFound, match="no registered instances"):
        await bus.request(subjects.instances("nope"), Empty(), InstanceList)


async def test_service_in_payload_must_match_subject(bus: Bus) -> None:
    with pytest.raises(BadRequest):
        await bus.request(subjects.register("api"), reg("a", service="web"), Ack)
    ack = await bus.request(subjects.register("api"), reg("a", service="api"), Ack)
    assert ack.ok
