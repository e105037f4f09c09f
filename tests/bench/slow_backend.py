"""Real aiohttp HTTP backends for the end-to-end benchmarks, each kept registered by the SDK.

    python tests/bench/slow_backend.py --ids a,b,c [--service api] [--median-ms 30]
        [--sigma 0.4] [--ttl 3] [--heartbeat-s 0.25]

One process serves every id given, each on its own port (the OS picks it) with its own
`ServiceAgent`, which heartbeats the instance's real in-flight count. `GET /` sleeps a
latency drawn from a lognormal (median `--median-ms`, shape `--sigma`) times the
instance's slow factor; `POST /admin/slow?factor=20` sets that factor (1 = normal), so a
benchmark can open and close a slow window exactly when it wants. `POST
/admin/fail?share=0.5` makes that share of its requests fail at once (a 500, no sleep: a
bad deploy); share=0 heals it. NATS_URL says where NATS
is. SIGTERM or SIGINT: the agents deregister, the servers close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal

import nats
from aiohttp import web

from services import logs
from services.sdk import ServiceAgent


class Backend:
    """One instance: its latency model, its slow factor and, once registered, its agent."""

    def __init__(self, instance_id: str, median_ms: float, sigma: float) -> None:
        self.instance_id = instance_id
        self.median_ms = median_ms
        self.sigma = sigma
        self.factor = 1.0
        self.fail_share = 0.0
        self.agent: ServiceAgent | None = None
        self.rng = random.Random(instance_id)  # reproducible per instance

    async def handle(self, _request: web.Request) -> web.Response:
        if self.agent is None:  # not registered yet: nobody should have found us
            return web.Response(status=503)
        if self.fail_share and self.rng.random() < self.fail_share:
            return web.Response(status=500, text="failing on purpose")
        with self.agent.track():
            delay_ms = self.median_ms * self.factor * self.rng.lognormvariate(0.0, self.sigma)
            await asyncio.sleep(delay_ms / 1000)
        return web.json_response({"instance_id": self.instance_id, "delay_ms": delay_ms})

    async def slow(self, request: web.Request) -> web.Response:
        try:
            self.factor = float(request.query.get("factor", "1"))
        except ValueError:
            return web.Response(status=400, text="factor must be a number")
        return web.json_response({"instance_id": self.instance_id, "factor": self.factor})

    async def fail(self, request: web.Request) -> web.Response:
        try:
            self.fail_share = float(request.query.get("share", "0"))
        except ValueError:
            return web.Response(status=400, text="share must be a number 0..1")
        return web.json_response({"instance_id": self.instance_id, "share": self.fail_share})


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(nc.close)
        for iid in args.ids.split(","):
            backend = Backend(iid, args.median_ms, args.sigma)
            app = web.Application()
            app.router.add_get("/", backend.handle)
            app.router.add_post("/admin/slow", backend.slow)
            app.router.add_post("/admin/fail", backend.fail)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            agent = ServiceAgent(
                nc,
                args.service,
                instance_id=iid,
                host="127.0.0.1",
                port=int(runner.addresses[0][1]),
                ttl_s=args.ttl,
                heartbeat_s=args.heartbeat_s,
            )
            backend.agent = await stack.enter_async_context(agent)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ids", required=True, help="instance ids, comma-separated")
    parser.add_argument("--service", default="api")
    parser.add_argument("--median-ms", type=float, default=30.0)
    parser.add_argument("--sigma", type=float, default=0.4)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument(
        "--heartbeat-s", type=float, default=None, help="default: what the registry asks"
    )
    args = parser.parse_args()
    logs.configure(os.environ.get("LOG_LEVEL", "WARNING"))
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
