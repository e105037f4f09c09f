"""`just console-shots demo`: the console's screenshots from the demo's fleet.

Starts `python -m services.stack demo` (nats-server, every worker, the demo fleet with its
operator steering it) on ports it picks, under a state folder of its own, stores two
revisions of a config-center key, waits until the fleet shows and the governor has a
history, then has Debian's Chromium (headless, in a thread) take each page into
docs/console/demo-*.png. Stops the stack with Ctrl-C's signal, as a person does.

    PYTHONPATH=.:tests:tests/integration python tests/integration/console_demo_shots.py [OUT]
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

import aiohttp
from browser import browser
from waiting import until

ROOT: Final = Path(__file__).resolve().parents[2]
SERVICE: Final = "demo-api"
KEY: Final = f"{SERVICE}/config.yml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _json(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with session.get(url) as resp:
            return await resp.json() if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


async def shots(base: str, out: Path) -> None:
    async with aiohttp.ClientSession() as session:

        async def fleet_up() -> bool | None:
            service = await _json(session, f"{base}/v1/ui/services/{SERVICE}")
            return (service is not None and len(service["instances"]) >= 5) or None

        async def steered() -> bool | None:
            history = await _json(session, f"{base}/v1/ui/history/{SERVICE}")
            return (history is not None and len(history["revisions"]) >= 2) or None

        await until(fleet_up, timeout=120, interval=0.5)
        for value in ("pool: 5\ntimeout_s: 2\n", "pool: 8\ntimeout_s: 2\n"):
            async with session.put(f"{base}/v1/kv/{KEY}", data=value.encode()) as resp:
                assert resp.status == 200, await resp.text()
        await until(steered, timeout=120, interval=0.5)
    async with browser(base) as page:
        await page.open("/")
        await page.text("#services", SERVICE)
        await page.screenshot(out / "demo-overview.png")
        await page.go(f"#/service/{SERVICE}")
        await page.text("#instances", SERVICE)
        await page.screenshot(out / "demo-service.png")
        await page.go(f"#/history/{SERVICE}")
        await page.text("#history", "r")
        await page.screenshot(out / "demo-history.png")
        await page.go("#/workers")
        await page.text("#workers", "baton-kv")
        await page.screenshot(out / "demo-workers.png")
        await page.go(f"#/kv-key/{KEY.replace('/', '%2F')}")
        await page.text("#kv-history", "+pool: 8")
        await page.screenshot(out / "demo-kv.png")


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "console"
    out.mkdir(parents=True, exist_ok=True)
    gateway = _free_port()
    state = Path(tempfile.mkdtemp(prefix="baton-console-demo-"))
    args = [
        "--root", str(state), "--port", "-1", "--http-port", "-1",
        "--influx-port", str(_free_port()), "--gateway-port", str(gateway), "--dns-port", "0",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DEMO_OPERATOR_S": "2",  # the operator steers soon: the history has revisions
        "DEMO_CYCLE_S": "2",
    }
    log = (state / "stack.log").open("wb")
    stack = subprocess.Popen(  # noqa: S603  # our own stack
        [sys.executable, "-m", "services.stack", "demo", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        asyncio.run(shots(f"http://127.0.0.1:{gateway}", out))
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(30)
        except subprocess.TimeoutExpired:
            stack.kill()
            stack.wait()
        log.close()
    sys.stdout.write(f"screenshots of the demo in {out}; the stack's log: {state / 'stack.log'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
