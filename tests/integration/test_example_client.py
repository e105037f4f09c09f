"""The Node.js example (docs/examples/node) speaks the contract to real workers.

It has only nats.js and JSON: if it registers, resolves, reports and reads errors right
against a real nats-server, registry, balancer and governor, the contract in docs/ is
enough to write a client in another language.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from asyncapi_cli import missing_node
from npmcache import npm_ci
from workers import run_balancer, run_governor, run_registry

from schemas import subjects
from schemas.balancer import CallReport
from schemas.governor import ConfigApplied, ConfigChange

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from natsserver import NatsServer

    from services.bus import Bus

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "node"
CACHE = ROOT / ".baton" / "node-example"  # node_modules live here, not in docs/
FILES = ("package.json", "package-lock.json", "client.mjs")
SERVICE = "node-example"


@pytest.fixture(scope="session")
def node_client() -> Path:
    """The example, with its npm packages installed (once; again when the lock changes)."""
    if why := missing_node():
        pytest.skip(f"the Node example needs node and npm: {why}")
    if failed := npm_ci(EXAMPLE, CACHE, FILES):
        pytest.fail(f"npm ci of docs/examples/node failed: {failed[-800:]}")
    return CACHE / "client.mjs"


async def run_client(client: Path, url: str) -> dict[str, Any]:
    node = shutil.which("node") or "node"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(client),
        SERVICE,
        "node-1",
        env={"PATH": "/usr/bin:/bin", "NATS_URL": url, "EXAMPLE_PORT": "9123"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, f"the example failed:\n{err.decode()}\n{out.decode()}"
    steps = [json.loads(line) for line in out.decode().splitlines()]
    return {step.pop("step"): step for step in steps}


@pytest.mark.timeout(300)  # the first run of a clone installs nats.js
async def test_node_client_speaks_the_contract(
    node_client: Path, nats_server: NatsServer, nc: Client, bus: Bus, events: Any
) -> None:
    reports: list[CallReport] = []

    async def on_report(msg: Msg) -> None:
        reports.append(msgspec.json.decode(msg.data, type=CallReport))

    await nc.subscribe(subjects.report(SERVICE), cb=on_report)
    async with run_registry(nats_server.url), run_governor(nats_server.url):
        # An operator's config, set before the balancer starts: it loads it before serving.
        change = ConfigChange(actor="test", strategy="round_robin")
        await bus.request(subjects.change(SERVICE), change, ConfigApplied)
        async with run_balancer(nats_server.url) as balancer:
            await asyncio.wait_for(balancer.sync.synced.wait(), 5)
            got = await run_client(node_client, nats_server.url)
            await events.wait_for("deregistered", "node-1")

    assert got["register"]["ack"]["instance_id"] == "node-1"
    assert got["register"]["ack"]["heartbeat_s"] == pytest.approx(10 / 3)
    assert got["heartbeat"]["ack"]["ok"] is True
    # the registry listed the instance it registered, as registered
    assert got["instances"]["instances"] == [
        {"instance_id": "node-1", "healthy": True, "metadata": {"lang": "node"}}
    ]
    # the balancer answered its resolve with that instance, by the operator's strategy
    endpoint = got["resolve"]["endpoint"]
    assert (endpoint["instance_id"], endpoint["port"]) == ("node-1", 9123)
    assert endpoint["strategy"] == "round_robin"
    # its call report reached the balancer's subject, closing the pick it was given
    assert [(r.instance_id, r.pick, r.ok) for r in reports] == [("node-1", endpoint["pick"], True)]
    assert got["config"]["config"]["revision"] == 1
    assert got["config"]["config"]["strategy"] == "round_robin"
    # an error reply's headers, read by nats.js
    assert got["error"] == {"code": 400, "message": "port must be 1..65535, got 70000"}
    assert got["deregister"]["ack"]["instance_id"] == "node-1"
    assert events.kinds("node-1") == ["registered", "deregistered"]
