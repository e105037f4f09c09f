"""What both local stacks (`just up`, `just cluster`) start the same way: an influxd of
their own for the collector, and the check that a port is free first."""

from __future__ import annotations

import os
import shutil
import socket
from typing import TYPE_CHECKING

from services.stack.supervisor import StartupError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

    from services.stack.supervisor import Supervisor

__all__ = ["INFLUXD_CONF", "console_address", "listening", "start_influxd"]

# An influxd 1.x of our own: loopback only, data in one folder, no usage reports.
INFLUXD_CONF = """reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
"""


def listening(port: int) -> bool:
    if port <= 0:
        return False
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def console_address(env: Mapping[str, str]) -> str:
    """Where the gateway of `env` serves the console (docs/console.md); "" with no HTTP."""
    port = int(env.get("GATEWAY_HTTP_PORT") or 8500)
    if port <= 0:
        return ""
    host = env.get("GATEWAY_BIND") or "127.0.0.1"
    if host == "0.0.0.0":  # noqa: S104  # a gateway on every interface answers on loopback
        host = "127.0.0.1"
    return f"http://{host}:{port}/ui/"


def start_influxd(sup: Supervisor, args: argparse.Namespace) -> str | None:
    """A local influxd (Debian's package) for the collector; None if there is none."""
    binary = shutil.which("influxd")
    if binary is None:
        sup.say("influxd not found: no collector (apt-get install -y influxdb; `just up` does)")
        return None
    if listening(args.influx_port):
        raise StartupError(
            f"something already listens on 127.0.0.1:{args.influx_port} (InfluxDB): stop it, "
            "pick another port with --influx-port, or use it: INFLUX_URL=http://... just up"
        )
    data = args.root / ".baton" / "influxdb"
    data.mkdir(parents=True, exist_ok=True)
    conf = data / "influxdb.conf"
    conf.write_text(INFLUXD_CONF.format(d=data, port=args.influx_port, rpc=args.influx_port + 2))
    influxd = sup.start("influxd", [binary, "-config", str(conf)], env=os.environ)
    sup.wait_for(influxd, "Listening on HTTP", args.ready_timeout)
    url = f"http://127.0.0.1:{args.influx_port}"
    sup.say(f"influxd ready at {url} (pid {influxd.pid}, log {influxd.log_path})")
    return url
