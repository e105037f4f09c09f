"""HAProxy (Debian's) finds Baton's instances by DNS SRV through the gateway.

A `server-template` with the RFC 2782 name and a `resolvers` section pointing at the
gateway routes real HTTP requests to real aiohttp backends that the SDK keeps registered
(tests/bench/slow_backend.py, one process per group so one can be SIGKILLed). A drained
instance and a killed one stop receiving requests; a new one starts receiving them; so
does one the balancer ejects as an outlier, until it returns.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from ports import free_port
from waiting import until
from workers import run_gateway, run_governor

from schemas import subjects
from schemas.balancer import CallReport
from schemas.governor import ConfigApplied, ConfigChange, OutlierPatch, OverridePatch

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from natsserver import NatsServer

    from services.bus import Bus
    from services.gateway import Gateway

HAPROXY = shutil.which("haproxy")
BACKEND = Path(__file__).parents[1] / "bench" / "slow_backend.py"
pytestmark = [
    pytest.mark.usefixtures("balancer"),
    pytest.mark.skipif(HAPROXY is None, reason="haproxy missing: `just dns-tools` installs it"),
]

# Resolve every 100 ms; an instance missing from one answer goes at once (hold obsolete
# 0 s, HAProxy's default); answers up to 8 KiB over EDNS (HAProxy drops larger ones).
CONFIG = """
global
    log stderr format raw local0 warning
defaults
    mode http
    log global
    timeout connect 500ms
    timeout client 5s
    timeout server 5s
    retries 0
resolvers baton
    nameserver gateway 127.0.0.1:{dns_port}
    accepted_payload_size 8192
    resolve_retries 2
    timeout resolve 100ms
    timeout retry 100ms
    hold valid 100ms
    hold obsolete 0s
    hold nx 100ms
    hold other 100ms
    hold timeout 100ms
    hold refused 100ms
frontend web
    bind 127.0.0.1:{port}
    default_backend web
backend web
    balance roundrobin
    server-template web 8 _web._tcp.service.baton resolvers baton init-addr none
"""


@pytest.fixture
async def gateway(nats_server: NatsServer) -> AsyncIterator[Gateway]:
    async with run_governor(nats_server.url), run_gateway(nats_server.url, dns_port=-1) as gw:
        await asyncio.wait_for(gw.view.synced.wait(), 5)
        yield gw


@pytest.fixture
def haproxy(gateway: Gateway, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(CONFIG.format(dns_port=gateway.dns_port, port=port))
    log = (tmp_path / "haproxy.log").open("wb")
    proc = subprocess.Popen([str(HAPROXY), "-db", "-f", str(cfg)], stdout=log, stderr=log)  # noqa: S603
    yield f"http://127.0.0.1:{port}/"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()


class Backends:
    """slow_backend.py processes, each serving some instance ids of `web`."""

    def __init__(self, nats_url: str) -> None:
        self.env = {**os.environ, "NATS_URL": nats_url, "LOG_LEVEL": "WARNING"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, ids: str) -> None:
        args = ["--ids", ids, "--service", "web", "--median-ms", "1", "--ttl", "2"]
        self.procs[ids] = subprocess.Popen(  # noqa: S603
            [sys.executable, str(BACKEND), *args, "--heartbeat-s", "0.2"], env=self.env
        )

    def kill(self, ids: str) -> None:
        self.procs[ids].send_signal(signal.SIGKILL)  # no deregistration: the lease lapses
        self.procs.pop(ids).wait()

    def close(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait()


@pytest.fixture
def backends(nats_server: NatsServer) -> Iterator[Backends]:
    b = Backends(nats_server.url)
    yield b
    b.close()


async def served(http: aiohttp.ClientSession, url: str, n: int) -> list[str]:
    """Who answered each of `n` requests through HAProxy ("error" for a failure)."""
    out = []
    for _ in range(n):
        try:
            async with http.get(url) as resp:
                out.append((await resp.json())["instance_id"] if resp.status == 200 else "error")
        except (aiohttp.ClientError, ValueError):
            out.append("error")
    return out


async def test_haproxy_follows_drain_kill_and_new_instances(
    bus: Bus, haproxy: str, backends: Backends
) -> None:
    backends.start("a,b")
    backends.start("c")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:

        async def only(expected: set[str]) -> bool:  # a window of requests, all from these
            return set(await served(http, haproxy, 3 * len(expected))) == expected

        await until(lambda: only({"a", "b", "c"}), timeout=15)

        change = ConfigChange(actor="ann", instances={"b": OverridePatch(drained=True)})
        await bus.request(subjects.change("web"), change, ConfigApplied)
        await until(lambda: only({"a", "c"}), timeout=15)
        assert "b" not in await served(http, haproxy, 20)

        backends.kill("c")
        await until(lambda: only({"a"}), timeout=15)
        assert set(await served(http, haproxy, 20)) == {"a"}  # no errors: c is gone

        backends.start("d")
        await until(lambda: only({"a", "d"}), timeout=15)


async def test_haproxy_stops_sending_to_an_ejected_instance_until_it_returns(
    bus: Bus, haproxy: str, backends: Backends
) -> None:
    outlier = OutlierPatch(consecutive_failures=2, max_ejected_percent=50, base_ejection_s=60)
    await bus.request(
        subjects.change("web"), ConfigChange(actor="ann", outlier=outlier), ConfigApplied
    )
    backends.start("a,b")
    backends.start("c")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:

        async def only(expected: set[str]) -> bool:
            return set(await served(http, haproxy, 3 * len(expected))) == expected

        await until(lambda: only({"a", "b", "c"}), timeout=15)
        # its callers report b's calls failing: the balancer ejects it, and the gateway's
        # answers (every SRV record, not only the first) leave it out
        for _ in range(2):
            await bus.publish(
                subjects.report("web"), CallReport(instance_id="b", latency_ms=1, ok=False)
            )
        await until(lambda: only({"a", "c"}), timeout=15)
        assert "b" not in await served(http, haproxy, 20)

        off = ConfigChange(actor="ann", outlier=OutlierPatch(enabled=False))
        await bus.request(subjects.change("web"), off, ConfigApplied)
        await until(lambda: only({"a", "b", "c"}), timeout=15)
