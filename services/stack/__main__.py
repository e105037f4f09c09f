"""`python -m services.stack up|demo`: the local stack in one terminal (`just up`, `just demo`).

Starts nats-server (JetStream, config infra/nats.conf), a local influxd (Debian's
package) unless INFLUX_URL is set, then the registry, balancer, governor, kv (the config
center), gateway, prober and collector workers, each ready once it answers `$SRV.PING` for
itself (its pid in the reply), and for `demo` the demo fleet, whose table is printed here.
Ctrl-C stops them all in reverse order and exits 0; a worker that dies is reported with
its log tail, the rest are stopped, and the exit code is 1.

State and logs go to ROOT/.baton/ (nats/ for JetStream, logs/<name>.log). With NATS_URL
set, no nats-server is started: the workers use that one.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from services.stack.local import console_address, listening, start_influxd
from services.stack.ready import pinged
from services.stack.supervisor import (
    StartupError,
    StopRequested,
    Supervisor,
    interpreter,
    nats_server_binary,
)
from services.stack.terminal import foreground

_REPO = Path(__file__).resolve().parents[2]
_NATS_CONF = _REPO / "infra" / "nats.conf"
_LISTENING = re.compile(r"Listening for client connections on [\w.:\[\]-]+:(\d+)")
_WORKERS = ("registry", "balancer", "governor", "kv", "gateway", "prober")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.stack", description=__doc__)
    parser.add_argument("mode", choices=("up", "demo"), help="up: the stack; demo: + a fleet")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="state in ROOT/.baton")
    parser.add_argument("--port", type=int, default=4222, help="NATS client port (-1: any)")
    parser.add_argument("--http-port", type=int, default=8222, help="monitoring (-1: any)")
    parser.add_argument("--influx-port", type=int, default=8086, help="local influxd HTTP port")
    parser.add_argument("--dns-port", type=int, help="gateway DNS, UDP+TCP (default 8600; 0: off)")
    parser.add_argument("--gateway-port", type=int, help="gateway HTTP (default 8500; 0: off)")
    parser.add_argument("--ready-timeout", type=float, default=20.0, help="seconds per child")
    parser.add_argument("--stop-timeout", type=float, default=10.0, help="then SIGKILL")
    return parser.parse_args(argv)


def _start_nats(sup: Supervisor, args: argparse.Namespace) -> str:
    for what, port in (("NATS", args.port), ("NATS monitoring", args.http_port)):
        if listening(port):
            raise StartupError(
                f"something already listens on 127.0.0.1:{port} ({what}): is a stack or "
                "another nats-server running? Stop it, pick other ports with --port and "
                f"--http-port, or use it: NATS_URL=nats://127.0.0.1:{args.port} just up"
            )
    argv = [nats_server_binary(), "-p", str(args.port), "-m", str(args.http_port)]
    if _NATS_CONF.exists():
        argv += ["-c", str(_NATS_CONF)]  # store_dir is relative: runs in ROOT
    else:  # an installed package without the repository's infra/
        argv += ["-a", "127.0.0.1", "-js", "-sd", ".baton/nats"]
    nats = sup.start("nats", argv, env=os.environ, cwd=args.root)
    text = sup.wait_for(nats, "Server is ready", args.ready_timeout)
    found = _LISTENING.search(text)
    if found is None:
        raise StartupError(f"nats-server is ready but did not say its port:\n{nats.tail()}")
    url = f"nats://127.0.0.1:{found[1]}"
    sup.say(f"nats-server ready at {url} (pid {nats.pid}, log {nats.log_path})")
    return url


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with foreground():  # Ctrl-C for the stack alone, not for `just` around it
        # `just demo --cluster` (or DEMO_CHAOS=1, chaos being about losing nodes and
        # replicas): the 3-node stack, in its own module
        if "--cluster" in argv or os.environ.get("DEMO_CHAOS", "") not in ("", "0", "false"):
            from services.stack import cluster  # noqa: PLC0415

            return cluster.run([a for a in argv if a != "--cluster"])
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    args = _parse(argv)
    args.root = args.root.resolve()
    sup = Supervisor(args.root / ".baton" / "logs", stop_timeout_s=args.stop_timeout)
    sup.install_signal_handlers()
    try:
        url = os.environ.get("NATS_URL", "")
        if url:
            sup.say(f"using the NATS server at NATS_URL={url}")
        else:
            url = _start_nats(sup, args)
        env = {**os.environ, "NATS_URL": url, "PYTHONUNBUFFERED": "1"}
        for var, port in (
            ("GATEWAY_DNS_PORT", args.dns_port),
            ("GATEWAY_HTTP_PORT", args.gateway_port),
        ):
            if port is not None:
                env[var] = str(port)
        workers = list(_WORKERS)
        influx = os.environ.get("INFLUX_URL", "") or start_influxd(sup, args)
        if influx:
            env["INFLUX_URL"] = influx
            workers.append("collector")
        for name in workers:
            child = sup.start(name, [interpreter(), "-m", f"services.{name}"], env=env)
            worker_id = pinged(sup, child, url, args.ready_timeout, worker=name)
            sup.say(f"{name} ready (pid {child.pid}, id {worker_id}, log {child.log_path})")
            if name == "gateway" and (console := console_address(env)):
                sup.say(f"console at {console}")
        if args.mode == "demo":
            demo = sup.start(
                "demo", [interpreter(), "-m", "services.demo"], env=env, stdout_to_terminal=True
            )
            sup.say(f"demo started (pid {demo.pid}, log {demo.log_path})")
        else:
            sup.say(f"up; NATS_URL={url}; Ctrl-C stops everything")
        return sup.watch(finishes="demo")
    except StartupError as exc:
        sup.stop_all()
        sup.say(f"failed to start: {exc}")
        return 1
    except StopRequested:
        sup.say("stopping")
        return 0
    finally:
        sup.stop_all()
        sup.say("stopped")


if __name__ == "__main__":
    sys.exit(run())
