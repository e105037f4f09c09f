"""`python -m services.demo [--duration S] [--strategy NAME]`: settings from DEMO_* and
NATS_URL; flags override them. SIGINT/SIGTERM: clients stop, instances deregister, servers
close, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

import msgspec

from services import logs
from services.bus import connect
from services.config import SettingsError, load, load_bus
from services.demo.demo import run, unless_stopped
from services.demo.settings import DemoSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.demo", description=__doc__)
    parser.add_argument("--duration", type=float, help="seconds to run (DEMO_DURATION_S)")
    parser.add_argument(
        "--strategy",
        help="a strategy for every request (DEMO_STRATEGY); unset: the service's configured "
        "one, rotated through the governor every DEMO_CYCLE_S",
    )
    args = parser.parse_args(argv)
    # Quieter than the workers: on a terminal, log lines would scroll the table away.
    logs.configure(os.environ.get("LOG_LEVEL", "WARNING"))
    log = logs.get_logger("demo")
    try:
        settings = load(DemoSettings, "DEMO")
        overrides = {"duration_s": args.duration, "strategy": args.strategy}
        settings = msgspec.convert(
            {
                **msgspec.to_builtins(settings),
                **{k: v for k, v in overrides.items() if v is not None},
            },
            DemoSettings,
        )
        bus_settings = load_bus()
    except (SettingsError, msgspec.ValidationError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2

    async def amain() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as stack:
            bus = await unless_stopped(
                stack.enter_async_context(connect(bus_settings, log, name="baton-demo")), stop
            )
            if bus is not None:
                await run(bus.nc, settings, log, stop, sys.stdout)

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
