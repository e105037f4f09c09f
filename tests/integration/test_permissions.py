"""infra/nats-auth.conf on a real nats-server: the whole stack runs with least privilege,
and what a role may not do, NATS refuses before any worker sees it.

What nats-py surfaces when the server refuses a publish or a subscription: the connection
stays up, the server answers `-ERR 'Permissions Violation for Publish to "subject"'`, and
nats-py passes `nats.errors.Error('nats: permissions violation for publish to "subject"')`
(lower-cased, subject included) to the connection's error_cb. Nothing is raised at the
call; a request on a refused subject ends in `nats.errors.TimeoutError`. The server logs
`"$G/user:NAME" - Publish Violation - Subject "subject"`.
"""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from natsserver import NatsServer
from waiting import until
from workers import run_balancer, run_governor, run_kv, run_registry

from schemas import subjects
from schemas.fields import utcnow
from schemas.governor import (
    ConfigApplied,
    ConfigChange,
    ConfigHistory,
    OverridePatch,
    Rollback,
    ServiceConfig,
)
from schemas.kv import KvEntries, KvPut, KvQuery, KvRecord, KvWritten
from schemas.registry import Ack, Empty, Heartbeat, InstanceEvent, InstanceList, ServiceList
from services import logs
from services.bus import Bus
from services.bus import refused as credentials_refused
from services.sdk import BalancerClient, ServiceAgent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from nats.aio.msg import Msg

CONF = Path(__file__).parents[2] / "infra" / "nats-auth.conf"
PASSWORDS = {
    "registry": "registry-pass",
    "balancer": "balancer-pass",
    "governor": "governor-pass",
    "orders": "orders-pass",
    "operator": "operator-pass",
    "viewer": "viewer-pass",
    "kv": "kv-pass",
}
DENIED_TIMEOUT = 0.2  # a refused request gets no answer at all: this is how long we wait
_VIOLATION = re.compile(r'"\$G/user:(\w+)" - (Publish|Subscription) Violation - Subject "([^"]+)"')


def violations(server: NatsServer) -> list[tuple[str, str, str]]:
    """(user, Publish|Subscription, subject) of every refusal the server logged."""
    return _VIOLATION.findall(server.log_path.read_text())


def refused(subject: str) -> str:
    """The text of the error nats-py hands to error_cb for a refused publish."""
    return f'nats: permissions violation for publish to "{subject.lower()}"'


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    """nats-server on infra/nats-auth.conf as shipped, but for where it listens and stores.

    `-p -1` and `-m -1` override the file's ports. `-sd` cannot override a store_dir set
    in the file (nats-server exits: "Duplicate 'store_dir' configuration"), so the copy
    gets a store_dir under tmp_path instead; every other line is the file's.
    """
    text, replaced = re.subn(
        r'(?m)^(\s*store_dir:\s*)"[^"]*"', rf'\1"{tmp_path / "js"}"', CONF.read_text()
    )
    assert replaced == 1, "infra/nats-auth.conf should set jetstream { store_dir } once"
    conf = tmp_path / "nats-auth.conf"
    conf.write_text(text)
    # jetstream=False: no -js/-sd flags; the file turns JetStream on itself.
    nats_server = NatsServer(
        tmp_path / "nats", jetstream=False, extra=["-c", str(conf), "-m", "-1"]
    ).start()
    yield nats_server
    nats_server.stop()


def url(server: NatsServer, user: str) -> str:
    return f"nats://{user}:{PASSWORDS[user]}@127.0.0.1:{server.port}"


class Conn:
    """A client connection as a user, with every error the server sent it."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors
        self.bus = Bus(nc, logs.get_logger("test"))

    async def synced(self) -> list[str]:
        """The errors, once the server has handled all this connection sent."""
        await handled(self.nc)
        return self.errors


async def handled(nc: Client) -> None:
    """Return once the server has handled every command `nc` sent so far.

    nats-py 2.16's flush() writes its PING straight to the socket, ahead of a SUB or PUB
    still in its write buffer, so one flush can come back before those reached the server.
    The flusher empties that buffer while the first PING is out; the second PING follows.
    """
    await nc.flush()
    await nc.flush()


@pytest.fixture
async def connect(server: NatsServer) -> AsyncIterator[Callable[[str], Awaitable[Conn]]]:
    async with AsyncExitStack() as stack:

        async def as_user(user: str) -> Conn:
            errors: list[str] = []

            async def on_error(exc: Exception) -> None:
                errors.append(str(exc))

            nc = await nats.connect(url(server, user), error_cb=on_error, allow_reconnect=False)
            stack.push_async_callback(nc.close)
            return Conn(nc, errors)

        yield as_user


@pytest.fixture
async def stack(server: NatsServer) -> AsyncIterator[None]:
    """Registry, governor and balancer, each connected as its own user."""
    async with (
        run_registry(url(server, "registry")),
        run_governor(url(server, "governor")),
        run_balancer(url(server, "balancer")) as balancer,
    ):
        await asyncio.wait_for(balancer.sync.synced.wait(), 5)
        yield


async def watch(conn: Conn, subject: str, kind: type[Any]) -> list[Any]:
    seen: list[Any] = []

    async def on_msg(msg: Msg) -> None:
        seen.append(msgspec.json.decode(msg.data, type=kind))

    await conn.nc.subscribe(subject, cb=on_msg)
    await handled(conn.nc)
    return seen


def reg(instance_id: str) -> bytes:
    return msgspec.json.encode({"instance_id": instance_id, "host": "10.0.0.5", "port": 8080})


@pytest.mark.usefixtures("stack")
async def test_the_whole_stack_runs_on_least_privilege(
    server: NatsServer, connect: Callable[[str], Awaitable[Conn]]
) -> None:
    orders, operator, viewer = (
        await connect("orders"),
        await connect("operator"),
        await connect("viewer"),
    )
    events = await watch(viewer, subjects.every(subjects.EVENTS), InstanceEvent)
    applied = await watch(viewer, subjects.every(subjects.APPLIED), ConfigApplied)

    async with ServiceAgent(
        orders.nc, "orders", instance_id="orders-1", host="10.0.0.5", port=8080
    ):
        ack = await orders.bus.request(
            subjects.heartbeat("orders"), Heartbeat(instance_id="orders-1"), Ack
        )
        assert ack.instance_id == "orders-1"
        async with BalancerClient(orders.nc).call("orders") as endpoint:  # resolve + report
            assert (endpoint.instance_id, endpoint.strategy) == ("orders-1", "weighted")

        change = ConfigChange(
            actor="ann", strategy="round_robin", instances={"orders-1": OverridePatch(weight=7)}
        )
        done = await operator.bus.request(subjects.change("orders"), change, ConfigApplied)
        assert done.revision == 1

        async def balancer_applied() -> bool:
            ep = await BalancerClient(orders.nc).resolve("orders")
            return ep.strategy == "round_robin"

        async def registry_applied() -> bool:
            listed = await viewer.bus.request(subjects.instances("orders"), Empty(), InstanceList)
            return [i.weight for i in listed.instances] == [7]

        await until(balancer_applied)
        await until(registry_applied)
        cfg = await viewer.bus.request(subjects.config("orders"), Empty(), ServiceConfig)
        history = await viewer.bus.request(subjects.history("orders"), Empty(), ConfigHistory)
        services = await viewer.bus.request(subjects.SERVICES, Empty(), ServiceList)
        assert (cfg.revision, len(history.entries), services.services) == (1, 1, ["orders"])

    assert [(e.kind, e.instance.instance_id) for e in events][:1] == [("registered", "orders-1")]
    assert [a.revision for a in applied] == [1]
    for conn in (orders, operator, viewer):
        assert await conn.synced() == []
    assert violations(server) == []  # workers included: none was refused anything


@pytest.mark.usefixtures("stack")
async def test_every_worker_answers_the_services_protocol_on_least_privilege(
    server: NatsServer, connect: Callable[[str], Awaitable[Conn]]
) -> None:
    viewer = await connect("viewer")
    inbox = viewer.nc.new_inbox()
    sub = await viewer.nc.subscribe(inbox, max_msgs=3)
    await viewer.nc.publish(subjects.srv("STATS"), b"", reply=inbox)
    replies = [json.loads((await sub.next_msg(timeout=5)).data) for _ in range(3)]
    names = sorted(reply["name"] for reply in replies)
    assert names == ["baton-balancer", "baton-governor", "baton-registry"]
    assert await viewer.synced() == []
    assert violations(server) == []  # nobody was refused a $SRV subscription or reply


@pytest.mark.usefixtures("stack")
async def test_a_service_cannot_register_as_another_service(
    server: NatsServer, connect: Callable[[str], Awaitable[Conn]]
) -> None:
    orders, viewer = await connect("orders"), await connect("viewer")
    events = await watch(viewer, subjects.every(subjects.EVENTS), InstanceEvent)

    with pytest.raises(nats.errors.TimeoutError):
        await orders.nc.request(
            subjects.register("payments"), reg("payments-1"), timeout=DENIED_TIMEOUT
        )
    await orders.nc.publish(subjects.register("payments"), reg("payments-2"))
    # Its own name still works. The registry takes every service's registrations on one
    # subscription, in order: had `payments` got through, it would have come before this.
    await orders.nc.request(subjects.register("orders"), reg("orders-1"), timeout=2)
    await until(lambda: events)  # the registry's event, on another connection

    assert orders.errors == [refused(subjects.register("payments"))] * 2
    assert [(e.kind, e.service, e.instance.instance_id) for e in events] == [
        ("registered", "orders", "orders-1")
    ]
    listed = await viewer.bus.request(subjects.SERVICES, Empty(), ServiceList)
    assert listed.services == ["orders"]
    assert violations(server) == [("orders", "Publish", "registry.v1.register.payments")] * 2


@pytest.mark.usefixtures("stack")
async def test_only_an_operator_changes_config(
    server: NatsServer, connect: Callable[[str], Awaitable[Conn]]
) -> None:
    orders, viewer, operator = (
        await connect("orders"),
        await connect("viewer"),
        await connect("operator"),
    )
    change = msgspec.json.encode(ConfigChange(actor="mallory", strategy="random"))
    forged = ServiceConfig(service="orders", revision=99, strategy="random")
    entry = ConfigApplied(
        service="orders", revision=99, config=forged, actor="mallory", reason="", at=utcnow()
    )
    rollback = msgspec.json.encode(Rollback(actor="mallory", to_revision=0))

    for conn in (orders, viewer):
        for subject, body in (
            (subjects.change("orders"), change),
            (subjects.rollback("orders"), rollback),
        ):
            with pytest.raises(nats.errors.TimeoutError):
                await conn.nc.request(subject, body, timeout=DENIED_TIMEOUT)
        assert await conn.synced() == [
            refused(subjects.change("orders")),
            refused(subjects.rollback("orders")),
        ]
    # Nor behind the governor's back, straight into the stream it stores config in.
    await orders.nc.publish(subjects.config_log("orders"), msgspec.json.encode(entry))
    assert (await orders.synced())[-1] == refused(subjects.config_log("orders"))

    cfg = await viewer.bus.request(subjects.config("orders"), Empty(), ServiceConfig)
    assert (cfg.revision, cfg.strategy) == (0, "weighted")  # the governor is up: it answered
    history = await viewer.bus.request(subjects.history("orders"), Empty(), ConfigHistory)
    assert history.entries == []
    refusals = {(user, subject) for user, _, subject in violations(server)}
    assert refusals == {
        ("orders", "governor.v1.change.orders"),
        ("orders", "governor.v1.rollback.orders"),
        ("orders", "baton.config.v1.orders"),
        ("viewer", "governor.v1.change.orders"),
        ("viewer", "governor.v1.rollback.orders"),
    }

    done = await operator.bus.request(
        subjects.change("orders"), ConfigChange(actor="ann", strategy="random"), ConfigApplied
    )
    assert (done.revision, done.config.strategy) == (1, "random")


async def test_a_service_has_no_jetstream_api(
    server: NatsServer, connect: Callable[[str], Awaitable[Conn]]
) -> None:
    orders = await connect("orders")
    js = orders.nc.jetstream(timeout=DENIED_TIMEOUT)

    with pytest.raises(nats.errors.TimeoutError):
        await js.add_stream(name="MINE", subjects=["mine.>"])
    with pytest.raises(nats.errors.TimeoutError):
        await js.get_last_msg(subjects.CONFIG_STREAM, subjects.config_log("orders"))

    assert await orders.synced() == [
        refused("$JS.API.STREAM.CREATE.MINE"),
        refused("$JS.API.STREAM.MSG.GET.BATON_CONFIG"),
    ]
    assert violations(server) == [
        ("orders", "Publish", "$JS.API.STREAM.CREATE.MINE"),
        ("orders", "Publish", "$JS.API.STREAM.MSG.GET.BATON_CONFIG"),
    ]
    assert not list((server.workdir.parent / "js").rglob("MINE"))  # no stream on disk


@pytest.mark.parametrize("credentials", ["", "orders:wrong@"], ids=["anonymous", "bad-password"])
async def test_a_connection_without_valid_credentials_is_refused(
    server: NatsServer, credentials: str
) -> None:
    nc = Client()
    try:
        with pytest.raises(nats.errors.Error) as err:
            await nc.connect(f"nats://{credentials}127.0.0.1:{server.port}", allow_reconnect=False)
        assert credentials_refused(err.value), err.value
    finally:
        await nc.close()  # nats-py leaves the refused socket open otherwise
    assert server.log_path.read_text().count("authentication error") == 1


async def test_config_center_rights_go_by_key_prefix(
    server: NatsServer, connect: Callable[[str], Awaitable[Conn]]
) -> None:
    """The kv worker runs as its own user; an operator writes any key, a viewer reads
    any, a service reads and watches only its own prefix and writes none."""
    async with run_kv(url(server, "kv")):
        orders, operator, viewer = (
            await connect("orders"),
            await connect("operator"),
            await connect("viewer"),
        )
        own = await watch(orders, subjects.kv_watch("orders/"), KvRecord)
        for key in ("orders/db.url", "payments/db.url"):
            put = KvPut(value=key.encode(), actor="ann")
            subject = subjects.kv_subject(subjects.KV_PUT, key)
            assert (await operator.bus.request(subject, put, KvWritten)).ok
        await until(lambda: own)
        assert [r.key for r in own] == ["orders/db.url"]
        read = subjects.kv_subject(subjects.KV_GET, "orders/db.url")
        (entry,) = (await orders.bus.request(read, KvQuery(), KvEntries)).entries
        assert entry.value == b"orders/db.url"
        other = subjects.kv_subject(subjects.KV_GET, "payments/db.url")
        assert (await viewer.bus.request(other, KvQuery(), KvEntries)).entries
        with pytest.raises(nats.errors.TimeoutError):
            await orders.nc.request(other, b"{}", timeout=DENIED_TIMEOUT)
        write = subjects.kv_subject(subjects.KV_PUT, "orders/db.url")
        with pytest.raises(nats.errors.TimeoutError):
            await viewer.nc.request(write, b'{"actor": "eve"}', timeout=DENIED_TIMEOUT)
        assert await operator.synced() == []
    assert sorted(violations(server)) == [
        ("orders", "Publish", other),
        ("viewer", "Publish", write),
    ]
