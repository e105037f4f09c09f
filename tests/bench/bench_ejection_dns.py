"""Ejections in DNS: how soon the gateway's answers leave an ejected instance out, and take
it back at the end of its ejection, against a drain and an undrain measured in the same run.

Registry, governor, balancer and gateway run as their own processes on one nats-server;
five instances of `web`, each on its own address. Each round takes one instance:

- eject: two failed call reports (consecutive_failures = 2) are published, then the
  gateway is asked `web.service.baton A` in a loop until the answer lacks the address;
  the time from the reports to that answer. The path: balancer, compare-and-set into
  BATON_OUTLIERS, the gateway's ordered consumer, its view.
- return: from the ejection's `until` (wall clock) to the first answer that has it again
  (the gateway's own timer; no message needed).
- drain / undrain (the baseline): the same loop from the governor's acknowledgement of
  `drained: true` / `false`. The path: governor, config log, registry, its event, the view.

    python tests/bench/bench_ejection_dns.py [--quick] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import msgspec
import nats
from harness import Row, emit, pct, processes, wait_for_responder, worker
from ports import free_port

from schemas import subjects
from schemas.balancer import CallReport, OutlierEvent
from schemas.governor import ConfigChange, OutlierPatch, OverridePatch
from schemas.registry import Registration

NAME = "web.service.baton"
HOSTS = [f"127.0.0.{10 + i}" for i in range(5)]
EJECTION_S = 0.3


async def addresses(port: int) -> set[str]:
    q = dns.message.make_query(NAME, "A")
    r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)
    return {rd.address for rrset in r.answer for rd in rrset}


async def answers_all(port: int) -> None:
    """Wait until the gateway (still starting, maybe) answers every instance."""
    async with asyncio.timeout(30):
        while True:
            try:
                if await addresses(port) == set(HOSTS):
                    return
            except (OSError, dns.exception.DNSException):
                pass  # not listening yet: ask again
            await asyncio.sleep(0.05)


async def until_dns(port: int, host: str, *, present: bool) -> float:
    """Ask until `host` is (or is not) in the answer; when that answer came (perf clock)."""
    async with asyncio.timeout(30):
        while (host in await addresses(port)) != present:
            pass
    return time.perf_counter()


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    os.environ.update(GATEWAY_DNS_PORT=str(port), GATEWAY_HTTP_PORT="0")
    names = ("registry", "governor", "balancer", "gateway")
    with processes(*(worker(n) for n in names)) as server:
        nc = await nats.connect(server.url)
        outlier = OutlierPatch(
            consecutive_failures=2,
            max_ejected_percent=20,
            interval_s=0.05,
            base_ejection_s=EJECTION_S,
            max_ejection_s=EJECTION_S,
        )
        await wait_for_responder(
            nc, subjects.change("web"), ConfigChange(actor="bench", outlier=outlier)
        )
        ids = [f"web-{i}" for i in range(len(HOSTS))]
        for iid, host in zip(ids, HOSTS, strict=True):
            reg = Registration(instance_id=iid, host=host, port=8000, ttl_s=3600)
            await wait_for_responder(nc, subjects.register("web"), reg)
        await answers_all(port)
        ejections: asyncio.Queue[OutlierEvent] = asyncio.Queue()

        async def on_event(msg: Any) -> None:
            event = msgspec.json.decode(msg.data, type=OutlierEvent)
            if event.kind == "ejected":
                ejections.put_nowait(event)

        await nc.subscribe(subjects.balancer_events("web"), cb=on_event)
        await nc.flush()
        eject: list[float] = []
        back: list[float] = []
        drain: list[float] = []
        undrain: list[float] = []
        for n in range(args.rounds):
            iid, host = ids[n % len(ids)], HOSTS[n % len(ids)]
            report = msgspec.json.encode(CallReport(instance_id=iid, latency_ms=1, ok=False))
            t0 = time.perf_counter()
            for _ in range(2):
                await nc.publish(subjects.report("web"), report)
            await nc.flush()
            eject.append(await until_dns(port, host, present=False) - t0)
            ejected = await asyncio.wait_for(ejections.get(), 10)
            assert ejected.instance_id == iid, ejected
            await until_dns(port, host, present=True)
            back.append(time.time() - ejected.until.timestamp())
            for drained, into in ((True, drain), (False, undrain)):
                change = ConfigChange(
                    actor="bench", instances={iid: OverridePatch(drained=drained)}
                )
                await nc.request(subjects.change("web"), msgspec.json.encode(change), timeout=5)
                t0 = time.perf_counter()
                into.append(await until_dns(port, host, present=not drained) - t0)
            await asyncio.sleep(EJECTION_S)  # let the multiplier decay: a fresh ejection
        await nc.close()
    rows = [
        Row(
            area="dns ejections",
            measure="reports -> DNS answer without it, p50",
            baseline="drain ack -> DNS answer without it",
            value=pct(eject, 0.5),
            base=pct(drain, 0.5),
            unit="ms",
            ratio=pct(eject, 0.5) / pct(drain, 0.5),
        ),
        Row(
            area="dns ejections",
            measure="reports -> DNS answer without it, p99",
            baseline="drain ack -> DNS answer without it",
            value=pct(eject, 0.99),
            base=pct(drain, 0.99),
            unit="ms",
            ratio=pct(eject, 0.99) / pct(drain, 0.99),
        ),
        Row(
            area="dns ejections",
            measure="until -> DNS answer with it again, p50",
            baseline="undrain ack -> DNS answer with it",
            value=pct(back, 0.5),
            base=pct(undrain, 0.5),
            unit="ms",
            ratio=pct(back, 0.5) / pct(undrain, 0.5),
        ),
    ]
    print(f"ejections vs drains in the gateway's DNS answers, {args.rounds} rounds:")
    emit(
        "ejection_dns",
        rows,
        {name: sorted(x * 1000 for x in xs) for name, xs in
         (("eject_ms", eject), ("back_ms", back), ("drain_ms", drain), ("undrain_ms", undrain))},
    )  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 rounds")
    parser.add_argument("--rounds", type=int, default=40)
    ns = parser.parse_args()
    if ns.quick:
        ns.rounds = 10
    asyncio.run(main(ns))
