"""The gateway under infra/nats-auth.conf: its own user's rights are enough for DNS, for
HTTP writes and for following the ejections, and NATS logs no violation for it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
import dns.asyncquery
import dns.message
from test_permissions import server, url, violations  # noqa: F401  # `server`: the fixture
from waiting import until
from workers import run_balancer, run_gateway, run_governor, run_registry

if TYPE_CHECKING:
    from natsserver import NatsServer

GATEWAY = "gateway:gateway-pass"


async def test_gateway_runs_on_its_own_user(server: NatsServer) -> None:  # noqa: F811
    async with (
        run_registry(url(server, "registry")),
        run_governor(url(server, "governor")),
        run_balancer(url(server, "balancer")) as balancer,
        run_gateway(f"nats://{GATEWAY}@127.0.0.1:{server.port}", dns_port=-1, http_port=-1) as gw,
    ):
        await asyncio.wait_for(balancer.sync.synced.wait(), 5)
        await asyncio.wait_for(gw.view.synced.wait(), 5)
        # it follows the balancers' ejections (BATON_OUTLIERS) on its own user's rights
        await until(lambda: gw.view.outliers.following, what="the gateway's ejection watch")
        body = {
            "Name": "web",
            "ID": "web-1",
            "Address": "127.0.0.1",
            "Port": 9001,
            "Tags": ["primary"],
        }
        async with (
            aiohttp.ClientSession() as http,
            http.put(f"http://127.0.0.1:{gw.http_port}/v1/agent/service/register", json=body) as r,
        ):
            assert r.status == 200, await r.text()
        await until(lambda: "web" in gw.view.services, what="the registration in the view")
        query = dns.message.make_query("web.service.baton", "SRV")
        reply = await dns.asyncquery.udp(query, "127.0.0.1", port=gw.dns_port, timeout=5)
        assert [r.port for r in reply.answer[0]] == [9001]
        # Consul's tag form finds it by the tag the Consul API registered
        query = dns.message.make_query("primary.web.service.baton", "SRV")
        reply = await dns.asyncquery.udp(query, "127.0.0.1", port=gw.dns_port, timeout=5)
        assert [r.port for r in reply.answer[0]] == [9001]
        assert gw.pick_failures == {}  # the balancer's pick came through
        # the console's writes and its list of workers, on the gateway's own rights
        base = f"http://127.0.0.1:{gw.http_port}/v1/ui"
        drain = {"instance_id": "web-1", "drained": True}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/services/web/change", json=drain) as r:
                assert r.status == 200, await r.text()
            async with http.post(f"{base}/services/web/rollback", json={"to_revision": 0}) as r:
                assert r.status in (200, 400, 404), await r.text()  # the governor's answer
            async with http.get(f"{base}/workers") as r:
                assert r.status == 200, await r.text()
                assert "baton-registry" in {w["name"] for w in (await r.json())["workers"]}
    assert [v for v in violations(server) if v[0] == "gateway"] == []
