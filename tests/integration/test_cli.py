"""`baton`, the installed executable, run as a subprocess against real workers (in-process)
on a real nats-server: what people read, what scripts parse, and the exit codes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import pytest
from barrier import subscribed
from natsserver import NatsServer
from subprocesses import reaped
from waiting import until

from schemas import subjects
from schemas.balancer import Endpoint
from schemas.governor import ConfigApplied, ConfigChange, ConfigHistory, OverridePatch
from schemas.governor import ServiceConfig as Config
from schemas.registry import InstanceEvent, InstanceList, InstancesQuery, Registration, ServiceList

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from conftest import Events

    from services.bus import Bus

T = TypeVar("T")
BATON = Path(sys.executable).parent / "baton"
ACTOR = "ann"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def rows(self) -> list[list[str]]:
        """Stdout as whitespace-separated cells, one list per line."""
        return [line.split() for line in self.out.splitlines()]


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "NATS_URL": url, "BATON_ACTOR": ACTOR}


@asynccontextmanager
async def started(url: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`baton *args`, killed if still running when the block ends (a test that failed)."""
    proc = await asyncio.create_subprocess_exec(
        BATON,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(url),
    )
    async with reaped(proc):
        yield proc


async def baton(url: str, *args: str) -> Run:
    async with started(url, *args) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


if TYPE_CHECKING:
    Baton = Callable[..., Awaitable[Run]]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def register(bus: Bus, events: Events, iid: str, port: int, **kw: Any) -> None:
    kw.setdefault("ttl_s", 3600)  # no heartbeats here: healthy however slow the host is
    reg = Registration(instance_id=iid, host="127.0.0.1", port=port, **kw)
    service = kw.get("service", "orders")
    await bus.request(subjects.register(service), reg, msgspec.Raw)
    await events.wait_for("registered", iid)


def pairs(text: str, block: int = 0) -> dict[str, str]:
    """The `key  value` lines of a block of lines (blocks are apart by a blank line)."""
    lines = text.split("\n\n")[block].splitlines()
    return dict(line.split(maxsplit=1) for line in lines)


# -- registry and balancer ---------------------------------------------------------------
@pytest.mark.usefixtures("registry")
async def test_services_and_instances_for_people_and_for_scripts(
    cli: Baton, bus: Bus, events: Events
) -> None:
    await register(bus, events, "orders-1", 8001, zone="eu-1", weight=50)
    await register(bus, events, "orders-2", 8002)
    services, table, services_json, table_json = await asyncio.gather(
        cli("services"),
        cli("instances", "orders"),
        cli("--json", "services"),
        cli("--json", "instances", "orders"),
    )
    for run in (services, table, services_json, table_json):
        assert (run.code, run.err) == (0, "")
    assert services.out == "orders\n"
    header, first, second = table.rows
    assert " ".join(header) == (
        "INSTANCE ADDRESS ZONE WEIGHT HEALTHY DRAINED INFLIGHT SEEN EJECTED CHECKS"
    )
    assert first[:7] == ["orders-1", "127.0.0.1:8001", "eu-1", "50", "yes", "no", "0"]
    assert second[:7] == ["orders-2", "127.0.0.1:8002", "-", "100", "yes", "no", "0"]
    assert first[7].endswith("s")  # seconds since the last heartbeat
    assert first[8] == "ago"
    assert first[9] == "?"  # no balancer runs to say who is ejected
    # --json: the reply as the worker sent it, one object on one line
    assert services_json.out.count("\n") == table_json.out.count("\n") == 1
    assert msgspec.json.decode(services_json.out, type=ServiceList).services == ["orders"]
    listed = msgspec.json.decode(table_json.out, type=InstanceList)
    assert [(i.instance_id, i.port) for i in listed.instances] == [
        ("orders-1", 8001),
        ("orders-2", 8002),
    ]


async def test_resolve_prints_the_endpoint(
    cli: Baton, bus: Bus, events: Events, balancer: Any
) -> None:
    for n in (1, 2, 3):
        await register(bus, events, f"orders-{n}", 8000 + n, zone=f"eu-{n}")
    await until(lambda: _known(balancer, 3))
    retry, hashed, hashed_again = await asyncio.gather(
        cli("resolve", "orders", "--exclude", "orders-1", "--exclude", "orders-3"),
        cli("--json", "resolve", "orders", "--strategy", "consistent_hash", "--key", "k1"),
        cli("--json", "resolve", "orders", "--strategy", "consistent_hash", "--key", "k1"),
    )
    assert (retry.code, retry.err) == (0, "")
    assert pairs(retry.out) == {
        "instance": "orders-2",
        "address": "127.0.0.1:8002",
        "zone": "eu-2",
        "strategy": "weighted",
        "panic": "no",
    }
    first = msgspec.json.decode(hashed.out, type=Endpoint)
    again = msgspec.json.decode(hashed_again.out, type=Endpoint)
    assert first.strategy == "consistent_hash"
    assert first.instance_id == again.instance_id


def _known(balancer: Any, n: int) -> bool:
    return len(balancer.known().get("orders", ())) == n


async def test_worker_errors_print_the_sentence_and_exit_1(
    cli: Baton, bus: Bus, events: Events, balancer: Any
) -> None:
    await register(bus, events, "orders-1", 8001)
    await until(lambda: _known(balancer, 1))
    unknown, bad, none_left = await asyncio.gather(
        cli("instances", "nope"),
        cli("resolve", "orders", "--strategy", "fastest"),
        cli("resolve", "orders", "--exclude", "orders-1"),
    )
    assert unknown.code == bad.code == none_left.code == 1
    assert unknown.out == bad.out == none_left.out == ""
    assert unknown.err.startswith("baton: 404 service 'nope' has no registered instances")
    assert bad.err.startswith("baton: 400 unknown strategy 'fastest'; use one of random,")
    assert none_left.err.startswith("baton: 503 ")
    assert all(r.err.count("\n") == 1 for r in (unknown, bad, none_left))


async def test_nothing_answering_exits_3_and_names_the_worker(
    cli: Baton, nats_server: NatsServer, nc: Any
) -> None:
    await nc.subscribe(subjects.SERVICES, cb=_never_answer)  # a stuck registry
    await subscribed(nc)
    stuck, no_balancer, no_governor, no_nats = await asyncio.gather(
        cli("--timeout", "0.3", "services"),
        cli("resolve", "orders"),
        cli("config", "orders"),
        baton(f"nats://127.0.0.1:{closed_port()}", "instances", "orders"),
    )
    assert stuck.code == no_balancer.code == no_governor.code == no_nats.code == 3
    assert stuck.err.startswith(
        "baton: the registry did not answer on registry.v1.services within 0.3 s"
    )
    assert no_balancer.err.startswith(
        "baton: no balancer answers on balancer.v1.resolve.orders; is it running?"
    )
    assert "no governor answers on governor.v1.config.orders" in no_governor.err
    assert no_nats.err.startswith("baton: cannot connect to NATS at nats://127.0.0.1:")


async def _never_answer(msg: Any) -> None:
    pass


async def test_bad_local_input_is_a_usage_error_and_sends_nothing() -> None:
    # Nothing listens at this URL: a command that tried to send would exit 3, not 2.
    url = f"nats://127.0.0.1:{closed_port()}"
    runs = await asyncio.gather(
        baton(url, "set", "orders", "weight", "orders-1", "heavy"),
        baton(url, "instances", "or.ders"),
        baton(url, "set", "orders", "delete"),
        baton(url, "set", "orders", "metadata", "orders-1", "tier"),
        baton(url, "set", "orders", "unset", "orders-1", "colour"),
    )
    assert [r.code for r in runs] == [2, 2, 2, 2, 2]
    heavy, dotted, delete, metadata, colour = (r.err for r in runs)
    assert "'heavy' is not a valid integer" in heavy
    assert "service name 'or.ders' contains '.'" in dotted
    assert "add --yes if you mean it" in delete
    assert "'tier' is not KEY=VALUE" in metadata
    assert "'colour' is not one of" in colour


# -- governor ----------------------------------------------------------------------------
async def history_filters(cli: Baton, ok: Baton) -> None:
    """`history --limit/--since` of `orders` at revision 8."""
    newest, from_rev, recent, future = await asyncio.gather(
        ok("history", "orders", "--limit", "2"),
        ok("history", "orders", "--since", "7"),
        ok("history", "orders", "--since", "1h", "--limit", "3"),
        ok("history", "orders", "--since", "2999-01-01T00:00:00Z"),
    )
    assert [row[0] for row in newest.rows[1:]] == ["7", "8"]
    assert [row[0] for row in from_rev.rows[1:]] == ["7", "8"]
    assert [row[0] for row in recent.rows[1:]] == ["6", "7", "8"]
    assert future.out.strip() == "(no changes to orders in that window)"
    bad = await cli("history", "orders", "--since", "last tuesday")
    assert bad.code == 2
    assert "'last tuesday' is not a revision (42), a duration ago (30m" in bad.err


@pytest.mark.usefixtures("registry", "governor")
async def test_set_history_and_rollback(cli: Baton, bus: Bus, events: Events) -> None:
    await register(bus, events, "orders-1", 8001)  # no heartbeats: register()'s long ttl
    await register(bus, events, "orders-2", 8002)

    async def ok(*args: str) -> Run:
        run = await cli(*args)
        assert (run.code, run.err) == (0, ""), run
        return run

    first = await ok("set", "orders", "strategy=round_robin", "--reason", "spread load")
    assert first.out.splitlines()[0] == "orders is at revision 1 (change by ann: spread load)"
    assert pairs(first.out, block=1)["strategy"] == "round_robin"
    second = await ok("set", "orders", "strategy", "least_connections", "--actor", "bob")
    assert second.out.startswith("orders is at revision 2 (change by bob)")
    await ok("set", "orders", "weight", "orders-1", "5")
    await ok("set", "orders", "drain", "orders-2", "--expected-revision", "3")
    await ok("set", "orders", "port", "orders-2", "9002")
    await ok("set", "orders", "threshold", "0.5")

    too_high, stale = await asyncio.gather(
        cli("set", "orders", "port", "orders-2", "70000"),
        cli("set", "orders", "drain", "orders-1", "--expected-revision", "1"),
    )
    assert too_high.code == stale.code == 1
    assert too_high.err.startswith("baton: 400 port must be 1..65535, got 70000")
    assert stale.err.startswith("baton: 409 service 'orders' is at revision 6, not 1")

    async def overridden() -> InstanceList | None:  # the registry follows the config log
        listed = await bus.request(subjects.instances("orders"), InstancesQuery(), InstanceList)
        ports = {i.instance_id: i.port for i in listed.instances}
        return listed if ports["orders-2"] == 9002 else None

    await until(overridden)
    config, config_json, table = await asyncio.gather(
        ok("config", "orders"), ok("--json", "config", "orders"), ok("instances", "orders")
    )
    assert pairs(config.out) == {
        "service": "orders",
        "revision": "6",
        "strategy": "least_connections",
        "protect_threshold": "0.5",
        "warmup_s": "0",
        "outlier": "on, 5 failures in a row, success rate, probation, every 10 s; ejected "
        "30 s x n up to 300 s; at most 10 %",
    }
    assert config.rows[-3:] == [
        ["INSTANCE", "WEIGHT", "DRAINED", "PORT", "METADATA"],
        ["orders-1", "5", "-", "-", "-"],
        ["orders-2", "-", "yes", "9002", "-"],
    ]
    assert msgspec.json.decode(config_json.out, type=Config).instances["orders-2"].port == 9002
    assert [row[:6] for row in table.rows[1:]] == [
        ["orders-1", "127.0.0.1:8001", "-", "5", "yes", "no"],
        ["orders-2", "127.0.0.1:9002", "-", "100", "yes", "yes"],
    ]

    await ok("set", "orders", "undrain", "orders-2")
    back = await ok("rollback", "orders", "1", "--reason", "too clever")
    assert back.out.startswith("orders is at revision 8 (rollback to 1 by ann: too clever)")
    history, history_json = await asyncio.gather(
        ok("history", "orders"), ok("--json", "history", "orders")
    )
    header, *rows = history.rows
    assert header == ["REV", "AT", "ACTOR", "KIND", "REASON", "CONFIG"]
    assert [row[0] for row in rows] == [str(n) for n in range(1, 9)]
    assert [row[3] for row in rows[:2]] == ["ann", "bob"]  # AT is a date and a time
    assert rows[0][4:8] == ["change", "spread", "load", "strategy=round_robin"]
    assert "orders-2(port=9002,undrained)" in history.out.splitlines()[7]
    assert rows[-1][4:7] == ["rollback", "to", "1"]
    entries = msgspec.json.decode(history_json.out, type=ConfigHistory).entries
    assert (entries[-1].kind, entries[-1].restored, entries[-1].actor) == ("rollback", 1, ACTOR)
    assert (entries[-1].config.strategy, entries[-1].config.instances) == ("round_robin", {})
    await history_filters(cli, ok)

    deleted = msgspec.json.decode(
        (await ok("--json", "set", "orders", "delete", "--yes")).out, type=ConfigApplied
    )
    assert (deleted.revision, deleted.kind) == (9, "delete")


@pytest.mark.usefixtures("registry", "governor")
async def test_watch_prints_events_until_count(
    nats_server: NatsServer, bus: Bus, events: Events
) -> None:
    async def ready(proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 10)  # subscribed from here on
        assert line.startswith(b"baton: watching "), line

    async with (
        started(nats_server.url, "watch", "orders", "--count", "3") as one,
        started(nats_server.url, "--json", "watch", "--count", "2") as every,
    ):
        await asyncio.gather(ready(one), ready(every))
        await _events_and_a_change(bus, events)
        (out, err), (json_out, _) = await asyncio.wait_for(
            asyncio.gather(one.communicate(), every.communicate()), 10
        )
    assert (one.returncode, every.returncode, err) == (0, 0, b"")
    lines = [line.split()[1:] for line in out.decode().splitlines()]
    assert lines[0] == ["orders", "registered", "orders-1", "127.0.0.1:8001", "weight=100"]
    assert sorted(lines[1:]) == [
        ["orders", "config", "revision", "1", "(change", "by", "ann)"],
        ["orders", "updated", "orders-1", "127.0.0.1:8001", "weight=100", "drained"],
    ]
    first, second = (msgspec.json.decode(line, type=InstanceEvent) for line in json_out.split())
    assert [(e.service, e.kind) for e in (first, second)] == [
        ("payments", "registered"),
        ("orders", "registered"),
    ]


async def _events_and_a_change(bus: Bus, events: Events) -> None:
    await register(bus, events, "payments-1", 9001, service="payments")  # not orders
    await register(bus, events, "orders-1", 8001)
    change = ConfigChange(actor=ACTOR, instances={"orders-1": OverridePatch(drained=True)})
    await bus.request(subjects.change("orders"), change, ConfigApplied)


# -- NATS refusals -----------------------------------------------------------------------
VIEWER_CONF = """
authorization {
  users = [
    {user: viewer, password: viewer-pass, permissions: {
      publish: ["governor.v1.config.>"], subscribe: ["_INBOX.>"]}}
  ]
}
"""


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[NatsServer]:
    conf = tmp_path / "auth.conf"
    conf.write_text(VIEWER_CONF)
    server = NatsServer(tmp_path / "auth", jetstream=False, extra=["-c", str(conf)]).start()
    yield server
    server.stop()


async def test_what_nats_refuses_exits_1_at_once(auth_server: NatsServer) -> None:
    viewer = f"nats://viewer:viewer-pass@127.0.0.1:{auth_server.port}"
    wrong = f"nats://viewer:not-the-password@127.0.0.1:{auth_server.port}"
    # a request timeout far past baton()'s 15 s guard: an answer means NATS refused it,
    # and the sentences below say so (a timeout or a retry would read otherwise)
    change, watch, login = await asyncio.gather(
        baton(viewer, "--timeout", "60", "set", "orders", "strategy=random"),
        baton(viewer, "--timeout", "60", "watch"),
        baton(wrong, "services"),
    )
    assert change.code == watch.code == login.code == 1
    assert change.err.startswith(
        'baton: 403 NATS refused it: nats: permissions violation for publish to "governor.v1.'
    )
    assert "permissions violation for subscription to" in watch.err
    assert "refused the credentials" in login.err
    assert "not-the-password" not in login.err
