"""What the first try showed an operator, run as `baton` subprocesses against real workers:
`--json` errors, `set` on unknown names, never-configured services, `baton status`.
"""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest
from test_cli import baton, closed_port, register
from workers import run_balancer, run_registry

from schemas import subjects

if TYPE_CHECKING:
    from conftest import Events
    from natsserver import NatsServer
    from test_cli import Baton

    from services.bus import Bus


def error_of(err: str) -> dict[str, Any]:
    """The one JSON object a `--json` error prints on stderr."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    found: dict[str, Any] = json.loads(lines[0])
    assert set(found) == {"code", "message"}, found
    return found


@pytest.mark.usefixtures("registry")
async def test_json_errors_are_json_on_stderr(cli: Baton) -> None:
    unknown, unknown_text, no_balancer, usage, no_nats = await asyncio.gather(
        cli("--json", "instances", "nope"),
        cli("instances", "nope"),
        cli("--json", "resolve", "orders"),
        cli("--json", "set", "orders", "weight", "orders-1", "heavy"),
        baton(f"nats://127.0.0.1:{closed_port()}", "--json", "services"),
    )
    assert (unknown.code, unknown.out) == (1, "")
    assert error_of(unknown.err) == {
        "code": 404,
        "message": unknown_text.err.removeprefix("baton: 404 ").strip(),
    }
    assert (no_balancer.code, error_of(no_balancer.err)["code"]) == (3, 503)
    assert "no balancer answers on balancer.v1.resolve.orders" in no_balancer.err
    assert (usage.code, error_of(usage.err)["code"]) == (2, 400)
    assert "'heavy' is not a valid integer" in error_of(usage.err)["message"]
    assert (no_nats.code, error_of(no_nats.err)["code"]) == (3, 503)


@pytest.mark.usefixtures("registry", "governor")
async def test_set_warns_or_refuses_names_the_registry_does_not_know(
    cli: Baton, bus: Bus, events: Events
) -> None:
    await register(bus, events, "orders-1", 8001)

    typo = await cli("set", "ordrs", "strategy=round_robin")
    assert typo.code == 0, typo
    assert typo.err.startswith("baton: warning: the registry knows no service 'ordrs'")
    assert "ordrs is at revision 1" in typo.out  # stored anyway: config ahead of deployment

    refused = await cli("set", "orders", "weight", "orders-9", "5", "--strict")
    assert (refused.code, refused.out) == (1, "")
    assert refused.err.startswith(
        "baton: 404 the registry knows no instance 'orders-9' of 'orders' (registered: orders-1)"
    )
    as_json = await cli("--json", "set", "orders", "drain", "orders-9")
    assert as_json.code == 0
    assert error_of(as_json.err)["code"] == 404
    assert json.loads(as_json.out)["revision"] == 1  # the refused one stored nothing

    known = await cli("set", "orders", "weight", "orders-1", "5", "--strict")
    assert (known.code, known.err) == (0, "")


@pytest.mark.usefixtures("governor")
async def test_set_without_a_registry_warns_and_strict_refuses(cli: Baton) -> None:
    anyway, strict = await asyncio.gather(
        cli("set", "orders", "strategy=random"),
        cli("--json", "set", "orders", "threshold", "0.5", "--strict"),
    )
    assert anyway.code == 0, anyway
    assert anyway.err.startswith("baton: warning: could not ask the registry whether it knows")
    assert "orders is at revision 1" in anyway.out
    assert (strict.code, strict.out) == (1, "")
    assert error_of(strict.err)["code"] == 503
    assert "nothing was changed (--strict)" in error_of(strict.err)["message"]


@pytest.mark.usefixtures("registry", "governor")
async def test_config_and_history_of_a_service_never_configured_say_so(cli: Baton) -> None:
    config, history = await asyncio.gather(cli("config", "fresh"), cli("history", "fresh"))
    assert (config.code, history.code) == (0, 0)
    assert "(fresh has never been configured: these are the defaults;" in config.out
    assert history.out.strip() == "(fresh has never been configured: no revisions yet)"
    await cli("set", "fresh", "strategy=random")
    config, history = await asyncio.gather(cli("config", "fresh"), cli("history", "fresh"))
    assert "never been configured" not in config.out + history.out


async def test_status_lists_every_worker_replica(
    cli: Baton, nats_server: NatsServer, bus: Bus
) -> None:
    none = await cli("status", "--wait", "0.2")
    assert none.code == 3
    assert none.err.startswith("baton: no Baton worker answered $SRV.STATS within 0.2 s")

    async with AsyncExitStack() as stack:
        await stack.enter_async_context(run_registry(nats_server.url))
        for _ in range(2):
            worker = await stack.enter_async_context(run_balancer(nats_server.url))
            await asyncio.wait_for(worker.sync.synced.wait(), 5)
        for _ in range(3):  # answered 404: counted as requests and as errors
            await bus.nc.request(subjects.resolve("nothing"), b"{}", timeout=2)
        await bus.nc.request(subjects.resolve("nothing"), b"[", timeout=2)  # a bad payload

        table, every, balancers = await asyncio.gather(
            cli("status"), cli("--json", "status"), cli("status", "balancer")
        )
    for run in (table, every, balancers):
        assert (run.code, run.err) == (0, ""), run
    head, _, body = table.out.partition("\n\n")
    rows = [line.split() for line in head.splitlines()]
    assert rows[0] == ["WORKER", "ID", "VERSION", "UPTIME", "PID", "HOST", "REQUESTS", "ERRORS"]
    assert [r[0] for r in rows[1:]] == ["baton-balancer", "baton-balancer", "baton-registry"]
    assert {r[4] for r in rows[1:]} == {str(os.getpid())}  # in-process workers, this pid
    assert len({r[1] for r in rows[1:]}) == 3  # one id per replica
    resolve = [line.split() for line in body.splitlines() if " resolve " in line]
    assert len(resolve) == 2  # one row per balancer replica
    assert {r[3:5] for r in map(tuple, resolve)} == {("balancer.v1.resolve.>", "balancer")}
    assert sum(int(r[5]) for r in resolve) == 4  # the queue group shared them
    assert sum(int(r[6]) for r in resolve) == 4

    workers = json.loads(every.out)["workers"]
    assert [w["type"] for w in workers] == ["io.nats.micro.v1.stats_response"] * 3
    assert [r[0] for r in balancers.rows[1:3]] == ["baton-balancer", "baton-balancer"]
    assert "baton-registry" not in balancers.out
