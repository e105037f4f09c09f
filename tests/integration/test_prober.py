"""The prober against real targets: an aiohttp server, TCP ports, a grpcio health server.

A real nats-server, the real registry and prober workers; the instance registers its
checks over NATS as any service would, and the test follows `prober.v1.results`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TYPE_CHECKING, Any

import grpc
import msgspec
import pytest
from aiohttp import web
from barrier import subscribed
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from waiting import until
from workers import run_prober

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.checks import CheckDefinition, CheckResult
from schemas.registry import Ack, Empty, Instance, InstanceList, Registration
from services.errors import BadRequest, BatonError, NotFound

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from natsserver import NatsServer

    from services.bus import Bus

pytestmark = pytest.mark.usefixtures("registry")


class Results:
    """Every check result published, in order."""

    def __init__(self) -> None:
        self.seen: list[CheckResult] = []

    async def on_msg(self, msg: Any) -> None:
        self.seen.append(msgspec.json.decode(msg.data, type=CheckResult))

    def of(self, check_id: str) -> list[CheckResult]:
        return [r for r in self.seen if r.check_id == check_id]

    def last(self, check_id: str) -> CheckResult | None:
        found = self.of(check_id)
        return found[-1] if found else None

    async def status(self, check_id: str, status: str, timeout: float = 10) -> CheckResult:
        def check() -> CheckResult | None:
            last = self.last(check_id)
            return last if last is not None and last.status == status else None

        return await until(check, timeout, what=f"{check_id} {status}")


@pytest.fixture
async def results(nc: Client) -> AsyncIterator[Results]:
    found = Results()
    sub = await nc.subscribe(subjects.every(subjects.PROBER_RESULTS), cb=found.on_msg)
    await subscribed(nc)
    yield found
    await sub.unsubscribe()


@pytest.fixture
async def prober(nats_server: NatsServer, registry: Any) -> AsyncIterator[Any]:
    async with run_prober(nats_server.url) as worker:
        await asyncio.wait_for(worker.sync.synced.wait(), 5)
        yield worker


class Target:
    """An HTTP service whose health answer the test sets."""

    def __init__(self) -> None:
        self.code = 200
        self.hits = 0

    async def health(self, _request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=self.code, text=f"status {self.code}")


@contextlib.asynccontextmanager
async def serve_http(app: web.Application) -> AsyncIterator[int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_target(target: Target, path: str = "/health") -> AsyncIterator[int]:
    """`target` answering GET `path` on a port of its own; yields the port."""
    app = web.Application()
    app.router.add_get(path, target.health)
    async with serve_http(app) as port:
        yield port


@contextlib.asynccontextmanager
async def grpc_health() -> AsyncIterator[tuple[health.aio.HealthServicer, int]]:
    """A real grpcio server with grpcio-health-checking's servicer; yields it and its port."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, port
    finally:
        await server.stop(None)


def check(check_id: str, kind: str, target: str, **fields: Any) -> CheckDefinition:
    fields.setdefault("interval_s", 0.1)
    fields.setdefault("timeout_s", 1.0)
    return msgspec.convert(
        {"check_id": check_id, "kind": kind, "target": target, **fields}, CheckDefinition
    )


async def register(
    bus: Bus, port: int, *checks: CheckDefinition, iid: str = "web-1", **fields: Any
) -> Ack:
    reg = Registration(instance_id=iid, host="127.0.0.1", port=port, checks=list(checks), **fields)
    return await bus.request(subjects.register("web"), reg, Ack)


async def listed(bus: Bus, iid: str) -> Instance | None:
    try:
        found = await bus.request(subjects.instances("web"), Empty(), InstanceList)
    except NotFound:
        return None
    return next((i for i in found.instances if i.instance_id == iid), None)


async def resolved(bus: Bus, times: int = 12) -> set[str]:
    picks: set[str] = set()
    for _ in range(times):
        try:
            pick = await bus.request(subjects.resolve("web"), ResolveRequest(), Endpoint)
        except BatonError:
            continue  # none eligible now
        picks.add(pick.instance_id)
    return picks


async def test_an_http_check_follows_the_service_with_consul_semantics(
    bus: Bus, prober: Any, results: Results
) -> None:
    target = Target()
    async with serve_target(target) as port:
        url = f"http://127.0.0.1:{port}/health"
        await register(bus, port, check("http", "http", url, success_before_passing=2))
        first = await results.status("http", "passing")
        assert "200" in first.output
        assert "status 200" in first.output
        assert len(results.of("http")) >= 2  # two successes before passing
        assert results.of("http")[0].status == "critical"  # critical until then, as Consul
        target.code = 429
        await results.status("http", "warning")
        target.code = 503
        failed = await results.status("http", "critical")
        assert failed.previous == "warning"
        assert "503" in failed.output
        target.code = 200
        back = await results.status("http", "passing")
        assert back.prober == prober.replica


async def test_tcp_and_grpc_checks(bus: Bus, prober: Any, results: Results) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    tcp_port = server.sockets[0].getsockname()[1]
    async with grpc_health() as (servicer, grpc_port):
        await servicer.set("orders.Orders", health_pb2.HealthCheckResponse.SERVING)
        await _tcp_and_grpc(bus, results, server, tcp_port, servicer, grpc_port)


async def _tcp_and_grpc(
    bus: Bus,
    results: Results,
    server: asyncio.Server,
    tcp_port: int,
    servicer: health.aio.HealthServicer,
    grpc_port: int,
) -> None:
    try:
        await register(
            bus,
            tcp_port,
            check("tcp", "tcp", f"127.0.0.1:{tcp_port}"),
            check("grpc", "grpc", f"127.0.0.1:{grpc_port}/orders.Orders"),
        )
        await results.status("tcp", "passing")
        await results.status("grpc", "passing")
        await servicer.set("orders.Orders", health_pb2.HealthCheckResponse.NOT_SERVING)
        down = await results.status("grpc", "critical")
        assert "NOT_SERVING" in down.output
        await servicer.set("orders.Orders", health_pb2.HealthCheckResponse.SERVING)
        await results.status("grpc", "passing")
        server.close()
        await server.wait_closed()
        refused = await results.status("tcp", "critical")
        assert "tcp 127.0.0.1" in refused.output
    finally:
        server.close()


async def test_hostile_targets_cost_bounded_time_and_memory_and_stall_nothing(
    bus: Bus, prober: Any, results: Results
) -> None:
    hang = asyncio.Event()

    async def huge(_request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(_request)
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError):
            for _ in range(1600):  # 100 MiB, if anyone read it all
                await response.write(chunk)
        return response

    async def loop(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def slow(_request: web.Request) -> web.Response:
        await hang.wait()
        return web.Response()

    async def fine(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    for path, handler in (("/huge", huge), ("/loop", loop), ("/slow", slow), ("/ok", fine)):
        app.router.add_get(path, handler)
    async with serve_http(app) as port:
        base = f"http://127.0.0.1:{port}"
        await register(
            bus,
            port,
            check("huge", "http", f"{base}/huge", interval_s=1.0),
            check("loop", "http", f"{base}/loop", interval_s=1.0),
            check("slow", "http", f"{base}/slow", interval_s=0.5, timeout_s=0.3),
            check("ok", "http", f"{base}/ok"),
        )
        try:
            await _hostile(results)
        finally:
            hang.set()


async def _hostile(results: Results) -> None:
    big = await results.status("huge", "passing")
    assert len(big.output.encode()) <= 4096
    looped = await results.status("loop", "critical")
    assert "redirects" in looped.output
    timed_out = await results.status("slow", "critical")
    assert "timed out" in timed_out.output
    # while the slow one hangs, the fast one goes on at its interval
    before = len(results.of("ok"))
    await until(lambda: len(results.of("ok")) >= before + 5, what="the ok check keeps running")
    assert results.last("ok") is not None


async def test_bad_checks_are_refused_naming_the_field(bus: Bus) -> None:
    with pytest.raises(BadRequest, match=r"checks\[0\]\.target .*own host"):
        await register(bus, 80, check("meta", "http", "http://169.254.169.254/latest"))
    with pytest.raises(BadRequest, match="remote code execution"):
        await bus.request(
            subjects.register("web"),
            msgspec.json.decode(
                b'{"instance_id":"w","host":"h","port":1,"checks":[{"check_id":"c","kind":"script"}]}'
            ),
            Ack,
        )


async def test_replicas_share_the_checks_and_take_over_a_dead_one(
    bus: Bus, nats_server: NatsServer, results: Results
) -> None:
    target = Target()
    async with contextlib.AsyncExitStack() as stack:
        port = await stack.enter_async_context(serve_target(target))
        replicas = [await stack.enter_async_context(run_prober(nats_server.url)) for _ in range(3)]
        await until(lambda: all(len(r.replicas.live) == 3 for r in replicas), what="3 live")
        url = f"http://127.0.0.1:{port}/health"
        checks = [check(f"c{n}", "http", url, interval_s=0.2) for n in range(12)]
        await register(bus, port, *checks)
        await until(lambda: all(len(results.of(f"c{n}")) >= 3 for n in range(12)), 10)
        runners = {r.prober for r in results.seen}
        assert len(runners) > 1  # the checks are split, not all on one replica
        # exactly one run of each check per slot while the replicas agree
        per_slot = collections.Counter(
            (r.check_id, round(r.at.timestamp() / 0.2)) for r in results.seen
        )
        assert max(per_slot.values()) <= 2  # rounding may pair two edges
        by_check = collections.defaultdict(set)
        for r in results.seen:
            by_check[r.check_id].add(r.prober)
        assert all(len(p) == 1 for p in by_check.values()), by_check
        # one replica dies without a word (its connection closes: no leaving notice)
        victim = replicas[0]
        orphaned = {c for c, p in by_check.items() if p == {victim.replica}}
        await victim.bus.nc.close()
        mark = len(results.seen)
        await until(
            lambda: (
                {r.check_id for r in results.seen[mark:] if r.prober != victim.replica}
                >= orphaned | set(by_check)
            ),
            10,
            what="the survivors run every check, the dead one's too",
        )


@pytest.mark.usefixtures("prober")
async def test_health_combines_checks_critical_leaves_every_answer_warning_stays(
    bus: Bus, balancer: Any, results: Results
) -> None:
    target = Target()
    async with serve_target(target) as port:
        url = f"http://127.0.0.1:{port}/health"
        # web-1 has only an HTTP check: no ttl, no heartbeats; web-2 a plain lease
        await register(
            bus, port, check("http", "http", url, success_before_passing=2), warning_weight=7
        )
        await register(bus, port + 1, iid="web-2")
        first = await listed(bus, "web-1")
        assert first is not None
        assert first.health == "critical"  # as Consul: critical until its checks pass
        await until(lambda: resolved(bus), what="web-2 resolves")
        assert "web-1" not in await resolved(bus)

        async def in_rotation() -> bool:
            return "web-1" in await resolved(bus)

        await until(in_rotation, 10, what="web-1 in rotation once its check passes")
        passing = await listed(bus, "web-1")
        assert passing is not None
        assert (passing.health, passing.healthy, passing.weight) == ("passing", True, 100)
        [state] = passing.check_states
        assert (state.check_id, state.status) == ("http", "passing")

        target.code = 429
        await results.status("http", "warning")

        async def warned() -> Instance | None:
            found = await listed(bus, "web-1")
            return found if found is not None and found.health == "warning" else None

        warning = await until(warned, what="web-1 warning")
        assert (warning.healthy, warning.weight) == (True, 7)  # in rotation, warning weight

        target.code = 503
        await results.status("http", "critical")

        async def out_of_rotation() -> bool:
            return "web-1" not in await resolved(bus, 20)

        await until(out_of_rotation, 10, what="web-1 out of every resolve")
        critical = await listed(bus, "web-1")
        assert critical is not None
        assert not critical.healthy
        assert "503" in critical.check_states[0].output

        target.code = 200
        await until(in_rotation, 10, what="web-1 back after two successes")


@pytest.mark.usefixtures("prober")
async def test_an_instance_critical_for_deregister_critical_after_is_removed(bus: Bus) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens there now: the check fails
    await register(
        bus, port, check("tcp", "tcp", f"127.0.0.1:{port}", deregister_critical_after_s=0.3)
    )
    assert await listed(bus, "web-1") is not None

    async def gone() -> bool:
        return await listed(bus, "web-1") is None

    await until(gone, 10, what="web-1 deregistered")


async def test_operators_see_each_check_in_baton(
    bus: Bus, prober: Any, results: Results, cli: Any
) -> None:
    target = Target()
    async with serve_target(target) as port:
        url = f"http://127.0.0.1:{port}/health"
        await register(bus, port, check("http", "http", url))
        await results.status("http", "passing")

        async def shown() -> Instance | None:
            found = await listed(bus, "web-1")
            return found if found is not None and found.health == "passing" else None

        await until(shown, what="the registry holds the passing status")
        checks, instances = await cli("checks", "web"), await cli("instances", "web")
    assert (checks.code, checks.err) == (0, "")
    header, row = (line.split() for line in checks.out.splitlines())
    assert header == ["INSTANCE", "CHECK", "KIND", "TARGET", "EVERY", "STATUS", "UPDATED", "OUTPUT"]
    assert row[:6] == ["web-1", "http", "http", url, "0.1s", "passing"]
    assert "200" in checks.out
    assert instances.out.splitlines()[1].endswith("passing (1/1 passing)")
