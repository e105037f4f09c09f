"""The operator console at scale: 10,000 instances over 500 services, in headless Chromium.

A registry and a gateway run as their own processes on one nats-server; the fleet is
registered through the bus (NATS requests to the registry, as every instance does).
Debian's Chromium (headless, through chromedriver, started and driven in a thread) then
loads the console and times itself:

1. Time to content: from the navigation's start to the console's `baton:drawn` mark (the
   page put the answer in the document), by the browser's own performance timeline, for
   the overview (50 services of 500) and a service page (20 instances); p50 over runs.
   Target <= 1 s. The baseline is the same load's DOMContentLoaded: the empty page shell.
2. Change to page: a registration into the service on the open page, from the request's
   send to the moment its row appears (a MutationObserver in the page stamps it), p50 and
   p99; the baseline is the same change's registry event reaching a NATS subscriber in
   this process, in the same run. Both are wall-clock stamps on one machine.

    python tests/bench/bench_console.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import time
from typing import Any, Final

import aiohttp
import msgspec
import nats
from harness import Row, emit, pct, processes, worker
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from schemas import subjects
from schemas.registry import Registration

SERVICES: Final = 500
PER_SERVICE: Final = 20  # 10,000 instances
IN_FLIGHT: Final = 64  # registrations sent at once
SPELL_S: Final = 0.15  # between changes: past the page's 100 ms redraw spell (console.js)
PAGE_WAIT_S: Final = 30.0  # a bound for a hung page, not a measure
DRAWN: Final = "baton:drawn"
OBSERVE: Final = """
window.__seen = null;
const wanted = arguments[0];
new MutationObserver((_, observer) => {
  if (document.querySelector(`tr[data-instance="${wanted}"]`)) {
    window.__seen = performance.timeOrigin + performance.now();
    observer.disconnect();
  }
}).observe(document.getElementById("main"), { childList: true, subtree: true });
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver), options=options)


def _name(n: int) -> str:
    return f"svc-{n:04d}"


async def register_fleet(nc: Any) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(service: str, n: int) -> None:
        reg = Registration(
            instance_id=f"{service}-{n}",
            host=f"10.{n % 250}.{n // 250}.1",
            port=8000 + n,
            zone=f"z{n % 3}",
            version="1.0.0",
            metadata={"team": f"t{n % 7}"},
            ttl_s=3600,
        )
        async with gate:
            await nc.request(subjects.register(service), msgspec.json.encode(reg), timeout=10)

    await asyncio.gather(*(one(_name(s), n) for s in range(SERVICES) for n in range(PER_SERVICE)))


async def until_in_view(session: aiohttp.ClientSession, base: str, instances: int) -> None:
    """Until the gateway's read model holds every instance."""
    async with asyncio.timeout(120):
        while True:
            seen = 0
            after = ""
            while True:
                url = f"{base}/v1/ui/overview?limit=1000&after={after}"
                try:
                    async with session.get(url) as resp:
                        body = await resp.json() if resp.status == 200 else {}
                except aiohttp.ClientError:
                    body = {}
                rows = body.get("services", [])
                seen += sum(r["instances"] for r in rows)
                after = body.get("next_after", "")
                if not after:
                    break
            if seen >= instances:
                return
            await asyncio.sleep(0.2)  # a poll of a process we do not own, not a measure


def _time_to_content(driver: webdriver.Chrome, url: str) -> tuple[float, float]:
    """(ms to the first drawn mark, ms to DOMContentLoaded) of a fresh load of `url`."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + PAGE_WAIT_S
    while True:
        found = driver.execute_script(
            "const m = performance.getEntriesByName(arguments[0]);"
            "const n = performance.getEntriesByType('navigation')[0];"
            "return m.length ? [m[0].startTime, n.domContentLoadedEventEnd] : null;",
            DRAWN,
        )
        if found:
            return float(found[0]), float(found[1])
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: no {DRAWN} mark within {PAGE_WAIT_S:g} s")
        time.sleep(0.01)


def _seen(driver: webdriver.Chrome) -> float:
    deadline = time.monotonic() + PAGE_WAIT_S
    while True:
        seen = driver.execute_script("return window.__seen")
        if seen is not None:
            return float(seen) / 1000
        if time.monotonic() > deadline:
            raise TimeoutError(f"the change was not drawn within {PAGE_WAIT_S:g} s")
        time.sleep(0.005)


async def changes_to_page(
    driver: webdriver.Chrome, nc: Any, base: str, rounds: int
) -> tuple[list[float], list[float]]:
    """(page latencies, NATS subscriber latencies) in seconds, one per registration."""
    service = _name(SERVICES // 2)
    heard: dict[str, float] = {}
    arrived: dict[str, asyncio.Event] = {}

    async def on_event(msg: Any) -> None:
        instance = msg.data.split(b'"instance_id":"', 1)[1].split(b'"', 1)[0].decode()
        heard[instance] = time.time()
        if instance in arrived:
            arrived[instance].set()

    sub = await nc.subscribe(subjects.events(service), cb=on_event)
    await asyncio.to_thread(_time_to_content, driver, f"{base}/ui/#/service/{service}")
    await asyncio.to_thread(
        driver.execute_script, "return new Promise((r) => setTimeout(r, 300))"
    )  # the event stream opens and its first resync redraw passes
    page: list[float] = []
    bus: list[float] = []
    for n in range(rounds):
        instance = f"{service}-new-{n}"
        await asyncio.to_thread(driver.execute_script, OBSERVE, instance)
        arrived[instance] = asyncio.Event()
        reg = Registration(instance_id=instance, host="10.99.0.1", port=9000 + n, ttl_s=3600)
        sent = time.time()
        await nc.request(subjects.register(service), msgspec.json.encode(reg), timeout=10)
        seen = await asyncio.to_thread(_seen, driver)
        async with asyncio.timeout(10):
            await arrived[instance].wait()
        page.append(seen - sent)
        bus.append(heard[instance] - sent)
        await asyncio.sleep(SPELL_S)  # pacing: each change its own, not a wait for one
    await sub.unsubscribe()
    return page, bus


def _within_a_second(measure: str, baseline: str, value: float, base: float) -> Row:
    """A console measure in ms against its baseline; the target is a second."""
    return Row(
        area="console",
        measure=measure,
        baseline=baseline,
        value=value,
        base=base,
        unit="ms",
        ratio=value / base if base else 0.0,
        target="<= 1000 ms",
        met=value <= 1000,
    )


async def main(args: argparse.Namespace) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    os.environ.update(  # the gateway's settings, read by its process
        GATEWAY_HTTP_PORT=str(port), GATEWAY_DNS_PORT="0", GATEWAY_CONFIG_WAIT_S="1"
    )
    instances = SERVICES * PER_SERVICE
    gateway = ("gateway", ["-m", "services.gateway"])
    with processes(worker("registry"), gateway) as server:
        nc = await nats.connect(server.url)
        started = time.perf_counter()
        first = Registration(instance_id="warm-0", host="127.0.0.1", port=1, ttl_s=3600)
        async with asyncio.timeout(30):  # the registry comes up
            while True:
                try:
                    await nc.request(
                        subjects.register("warm"), msgspec.json.encode(first), timeout=1
                    )
                    break
                except nats.errors.Error:
                    await asyncio.sleep(0.1)
        await register_fleet(nc)
        registered_s = time.perf_counter() - started
        async with aiohttp.ClientSession() as session:
            await until_in_view(session, base, instances)
        print(f"{instances} instances over {SERVICES} services registered in {registered_s:.1f} s")
        driver = await asyncio.to_thread(_chromium)
        try:
            pages = {
                "overview": f"{base}/ui/",
                "service page": f"{base}/ui/#/service/{_name(SERVICES // 3)}",
            }
            timed: dict[str, list[tuple[float, float]]] = {}
            for label, url in pages.items():
                await asyncio.to_thread(_time_to_content, driver, url)  # warm: caches, JIT
                timed[label] = [
                    await asyncio.to_thread(_time_to_content, driver, url) for _ in range(args.runs)
                ]
            page, bus = await changes_to_page(driver, nc, base, args.changes)
        finally:
            await asyncio.to_thread(driver.quit)
        await nc.close()
    rows: list[Row] = []
    for label, runs in timed.items():
        drawn = statistics.median(r[0] for r in runs)
        shell = statistics.median(r[1] for r in runs)
        print(
            f"  {label}: content drawn p50 {drawn:.0f} ms (DOMContentLoaded {shell:.0f} ms) "
            f"over {len(runs)} loads; max {max(r[0] for r in runs):.0f} ms"
        )
        rows.append(
            _within_a_second(
                f"{label} time to content, p50 ({instances:,} instances)",
                "the page shell's DOMContentLoaded",
                drawn,
                shell,
            )
        )
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        value, base_ms = pct(page, q), pct(bus, q)
        print(f"  change -> page {label} {value:.1f} ms; -> NATS subscriber {base_ms:.2f} ms")
        rows.append(
            _within_a_second(
                f"registration -> its row on the open page, {label}",
                "the same change -> a NATS subscriber",
                value,
                base_ms,
            )
        )
    emit(
        "console",
        rows,
        {
            "time_to_content_ms": {k: [r[0] for r in v] for k, v in timed.items()},
            "change_to_page_ms": sorted(x * 1000 for x in page),
            "change_to_nats_ms": sorted(x * 1000 for x in bus),
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 loads a page, 30 changes")
    parser.add_argument("--runs", type=int, default=20, help="loads of each page")
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.changes = 5, 30
    asyncio.run(main(args))
