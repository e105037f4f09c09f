"""node-consul (npm `consul`, not ours): a Node service registers through the gateway,
keeps its TTL check passing, and its blocking-query watcher sees every change."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import reg
from httpgateway import stack
from nodescript import node_script

from schemas import subjects
from schemas.registry import Ack

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Events
    from natsserver import NatsServer

    from services.bus import Bus

ROOT = Path(__file__).resolve().parents[2]
PREFIX = ROOT / ".baton" / "node"  # where `just node-clients` installs it (gitignored)
SCRIPT = "consul_watch.js"  # in node/


@pytest.fixture(scope="module")
def node_consul() -> Path:
    """node-consul, installed the way `just node-clients` does when it is missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    module = PREFIX / "node_modules" / "consul"
    if not module.exists():
        done = subprocess.run(  # noqa: S603
            ["npm", "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund", "consul@2"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"npm could not install consul: {done.stderr.strip()[-300:]}")
    return PREFIX / "node_modules"


async def test_node_consul_registers_passes_and_watches(
    nats_server: NatsServer, bus: Bus, events: Events, node_consul: Path
) -> None:
    async with (
        stack(nats_server.url) as http,
        node_script(SCRIPT, node_consul, str(http.gateway.http_port), "web", "web-node") as script,
    ):

        async def ids(want: Callable[[dict[str, str]], bool]) -> dict[str, Any]:
            return await script.line(lambda seen: want(seen["ids"]))

        first = await ids(lambda ids: ids.get("web-node") == "passing")
        await bus.request(subjects.register("web"), reg("web-nats", ttl_s=30.0), Ack)
        grown = await ids(lambda ids: "web-nats" in ids)
        assert int(grown["index"]) > int(first["index"])
        await script.say("stop")  # its passes stop: critical, then expired
        await ids(lambda ids: ids.get("web-node") == "critical")
        gone = await ids(lambda ids: "web-node" not in ids)
        assert gone["ids"] == {"web-nats": "passing"}
        await events.wait_for("expired", "web-node")
