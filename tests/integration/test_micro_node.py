"""nats.js (a client nobody here wrote) and Baton's workers see each other as NATS services:
nats.js's ADR-32 client reads every worker's ping, info and stats, and `baton status --all`
lists a service built with nats.js's own ADR-32 implementation beside the workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from npmcache import npm_ci
from test_cli import baton
from workers import run_balancer, run_registry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from natsserver import NatsServer

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "interop" / "micro_node"
CACHE = ROOT / ".baton" / "micro-node"  # node_modules live here, not in tests/
FILES = ("package.json", "package-lock.json", "micro.mjs")


@pytest.fixture(scope="session")
def script() -> Path:
    """micro.mjs with nats.js installed by npm from the lock (again when the lock changes)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs node and npm (Debian's nodejs and npm packages)")
    if failed := npm_ci(SOURCE, CACHE, FILES):
        pytest.skip(f"npm could not install nats.js: {failed[-500:]}")
    return CACHE / "micro.mjs"


async def node(script: Path, url: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        shutil.which("node") or "node",
        str(script),
        *args,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NATS_URL": url},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture
async def workers(nats_server: NatsServer) -> AsyncIterator[None]:
    async with run_registry(nats_server.url), run_balancer(nats_server.url) as balancer:
        await asyncio.wait_for(balancer.sync.synced.wait(), 5)
        yield


@pytest.mark.usefixtures("workers")
async def test_nats_js_reads_every_worker(script: Path, nats_server: NatsServer) -> None:
    proc = await node(script, nats_server.url, "read", "baton-balancer")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    seen: dict[str, list[dict[str, Any]]] = json.loads(out)
    assert [r["name"] for r in seen["ping"]] == ["baton-balancer"]
    assert [r["type"] for r in seen["info"]] == ["io.nats.micro.v1.info_response"]
    [info], [stats] = seen["info"], seen["stats"]
    endpoints = {e["name"]: (e["subject"], e["queue_group"]) for e in info["endpoints"]}
    assert endpoints["resolve"] == ("balancer.v1.resolve.>", "balancer")
    assert stats["id"] == info["id"] == seen["ping"][0]["id"]
    assert {e["name"] for e in stats["endpoints"]} == set(endpoints)


@pytest.mark.usefixtures("workers")
async def test_baton_status_lists_a_nats_js_service_beside_the_workers(
    script: Path, nats_server: NatsServer
) -> None:
    proc = await node(script, nats_server.url, "serve", "js-echo")
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line == b"ready\n"
        everyone, ours = await asyncio.gather(
            baton(nats_server.url, "status", "--all"), baton(nats_server.url, "status")
        )
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 10)
    assert (everyone.code, everyone.err) == (0, ""), everyone
    names = [row[0] for row in everyone.rows[1:] if row and row[0] != "WORKER"]
    assert names.count("js-echo") == 2  # its replica row and its `echo` endpoint row
    js = next(row for row in everyone.rows if row[:1] == ["js-echo"])
    assert js[2] == "1.2.3"
    assert js[3] != "-"  # nats.js's `started` (milliseconds) read as a time
    assert "js-echo" not in ours.out  # only Baton's workers without --all
    assert "baton-balancer" in ours.out
