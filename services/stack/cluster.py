"""`python -m services.stack.cluster up|demo`: the local stack on a 3-node NATS cluster.

`just cluster` (up) and `just demo --cluster` (demo). Three nats-servers routed to one
another on loopback, one JetStream store each (ROOT/.baton/cluster/nK/), then two
replicas of every worker (registry, balancer, governor, kv, gateway, prober, collector when an
InfluxDB is there), each given every node's URL in NATS_URL and ready once it answers
`$SRV.PING` for itself (services/stack/ready.py), and the config log and the config
center's store on 3 replicas. Each
gateway replica listens on ports of its own: --dns-port and --gateway-port are the
first replica's, the next replica's are one up (-1: any free ones). With
`--chaos` (or DEMO_CHAOS=1), every few seconds one random node or worker replica is
killed with SIGKILL and started again a little later, while the demo's table shows the
calls still succeeding. Ctrl-C stops everything in reverse order.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from services.stack.local import console_address, listening, start_influxd
from services.stack.ready import answers, pinged
from services.stack.supervisor import (
    Child,
    StartupError,
    StopRequested,
    Supervisor,
    interpreter,
    nats_server_binary,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Chaos", "node_conf", "run"]

_WORKERS = ("registry", "balancer", "governor", "kv", "gateway", "prober")
_NODES = 3


@dataclass(frozen=True)
class Node:
    name: str
    port: int
    route_port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route(self) -> str:
        return f"nats://127.0.0.1:{self.route_port}"


def node_conf(node: Node, nodes: list[Node], store: Path) -> str:
    """One node's nats-server config: its ports, its store, routes to the others."""
    routes = ", ".join(f'"{n.route}"' for n in nodes if n != node)
    return f"""# written by `python -m services.stack.cluster`; see infra/nats-cluster-*.conf
server_name: {node.name}
listen: "127.0.0.1:{node.port}"
http: "127.0.0.1:{node.http_port}"
jetstream {{
  store_dir: "{store}"
  # acknowledged config changes must survive a power loss, not only a crash (Jepsen)
  sync_interval: always
}}
cluster {{
  name: baton
  listen: "127.0.0.1:{node.route_port}"
  routes: [{routes}]
}}
# a dead peer or client is noticed within seconds
ping_interval: "2s"
ping_max: 2
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ports(base: int) -> list[int]:
    return [_free_port() for _ in range(_NODES)] if base < 0 else [base + i for i in range(_NODES)]


def _healthy(node: Node) -> bool:
    """The node's /healthz: up, and JetStream current with a meta leader."""
    url = f"http://127.0.0.1:{node.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # our own node
            return json.loads(resp.read()).get("status") == "ok"  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return False


@dataclass
class Spec:
    """How to start a child again: chaos restarts it exactly as it first ran."""

    argv: list[str]
    env: Mapping[str, str]
    cwd: Path | None = None
    worker: str = ""  # the worker it runs (ready once it answers $SRV.PING), or a node:
    node: Node | None = None


@dataclass
class Chaos:
    """Every `every_s`, SIGKILL one random node or worker replica; start it again after
    `down_s`; wait until it is back (a node healthy, a worker serving) before the next."""

    sup: Supervisor
    specs: dict[str, Spec]
    every_s: float = 10.0
    down_s: float = 3.0
    rng: random.Random = field(default_factory=random.Random)
    down: set[str] = field(default_factory=set)
    kills: int = 0
    _next: float = 0.0
    _back_at: float = 0.0
    _victim: str = ""
    _recovering_until: float = 0.0

    def __post_init__(self) -> None:
        self._next = time.monotonic() + self.every_s

    def step(self, now: float) -> None:
        if self._victim and now >= self._back_at and self._victim in self.down:
            self._restart(self._victim)
            self._recovering_until = now + 30.0
        elif self._victim and self._victim not in self.down:
            if self._recovered(self._victim) or now > self._recovering_until:
                self.sup.say(f"chaos: {self._victim} is back")
                self._victim = ""
                self._next = now + self.every_s
        elif not self._victim and now >= self._next:
            self._kill(self.rng.choice(sorted(self.specs)), now)

    def _child(self, name: str) -> Child:
        return next(c for c in self.sup.children if c.name == name)

    def _kill(self, name: str, now: float) -> None:
        child = self._child(name)
        child.proc.kill()
        child.proc.wait()
        self.down.add(name)
        self.kills += 1
        self._victim = name
        self._back_at = now + self.down_s
        self.sup.say(f"chaos: killed {name} (SIGKILL); starting it again in {self.down_s:g} s")

    def _restart(self, name: str) -> None:
        spec = self.specs[name]
        old = self._child(name)
        index = self.sup.children.index(old)
        new = self.sup.start(name, spec.argv, env=spec.env, cwd=spec.cwd)
        self.sup.children.remove(new)
        self.sup.children[index] = new  # keep the stop order: nodes last
        self.down.discard(name)

    def _recovered(self, name: str) -> bool:
        spec = self.specs[name]
        if spec.node is not None:
            return _healthy(spec.node)
        return answers(spec.env["NATS_URL"], spec.worker, self._child(name).pid)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.stack.cluster", description=__doc__)
    parser.add_argument("mode", choices=("up", "demo"), help="up: the stack; demo: + a fleet")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="state in ROOT/.baton")
    parser.add_argument("--port", type=int, default=4222, help="first client port (-1: any)")
    parser.add_argument("--route-port", type=int, default=6222, help="first route port (-1: any)")
    parser.add_argument("--http-port", type=int, default=8222, help="first monitoring port")
    parser.add_argument("--influx-port", type=int, default=8086, help="local influxd HTTP port")
    parser.add_argument("--dns-port", type=int, default=8600, help="first gateway's DNS (-1: any)")
    parser.add_argument("--gateway-port", type=int, default=8500, help="first gateway's HTTP")
    parser.add_argument("--replicas", type=int, default=2, help="replicas of every worker")
    parser.add_argument(
        "--chaos",
        action="store_true",
        default=os.environ.get("DEMO_CHAOS", "") not in ("", "0", "false"),
        help="kill and restart a random node or replica every --chaos-every s (DEMO_CHAOS=1)",
    )
    parser.add_argument("--chaos-every", type=float, default=10.0, help="seconds between kills")
    parser.add_argument("--chaos-down", type=float, default=3.0, help="seconds a victim stays down")
    parser.add_argument("--ready-timeout", type=float, default=30.0, help="seconds per child")
    parser.add_argument("--stop-timeout", type=float, default=10.0, help="then SIGKILL")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error(f"--replicas must be at least 1, got {args.replicas}")
    if args.chaos_every <= 0 or args.chaos_down <= 0:
        parser.error("--chaos-every and --chaos-down must be positive seconds")
    return args


def _start_nodes(sup: Supervisor, args: argparse.Namespace, specs: dict[str, Spec]) -> list[Node]:
    ports, routes, https = _ports(args.port), _ports(args.route_port), _ports(args.http_port)
    nodes = [
        Node(f"n{i + 1}", ports[i], routes[i], https[i]) for i in range(_NODES)
    ]  # fmt: skip
    for node in nodes:
        for port in (node.port, node.route_port, node.http_port):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    raise StartupError(
                        f"something already listens on 127.0.0.1:{port} (NATS node "
                        f"{node.name}): stop it, or pick other first ports with --port, "
                        "--route-port and --http-port (-1: any free port)"
                    )
    base = args.root / ".baton" / "cluster"
    for node in nodes:
        (base / node.name).mkdir(parents=True, exist_ok=True)
        conf = base / node.name / "nats.conf"
        conf.write_text(node_conf(node, nodes, base / node.name / "js"))
        spec = Spec([nats_server_binary(), "-c", str(conf)], os.environ, node=node)
        specs[f"nats-{node.name}"] = spec
        child = sup.start(f"nats-{node.name}", spec.argv, env=spec.env)
        sup.wait_for(child, "Server is ready", args.ready_timeout)
    deadline = time.monotonic() + args.ready_timeout
    while not all(_healthy(n) for n in nodes):
        if sup.stop_requested.wait(0.05):
            raise StopRequested
        if time.monotonic() > deadline:
            raise StartupError(
                f"the NATS cluster had no JetStream meta leader within {args.ready_timeout:g} s;"
                f" see the logs in {sup.log_dir}"
            )
    sup.say("nats cluster ready: " + ", ".join(f"{n.name} {n.url}" for n in nodes))
    return nodes


def _watch(sup: Supervisor, chaos: Chaos | None) -> int:
    """As Supervisor.watch, but a child chaos killed on purpose is no failure."""
    while not sup.stop_requested.wait(0.2):
        if chaos is not None:
            chaos.step(time.monotonic())
        for child in sup.children:
            code = child.proc.poll()
            if code is None or (chaos is not None and child.name in chaos.down):
                continue
            if child.name == "demo" and code == 0:
                sup.say("demo finished")
                return 0
            sup.say(
                f"{child.name} (pid {child.pid}) exited unexpectedly with code {code}; "
                f"last lines of {child.log_path}:\n{child.tail()}"
            )
            return 1
    sup.say("stopping")
    return 0


def run(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    args.root = args.root.resolve()
    sup = Supervisor(args.root / ".baton" / "logs", stop_timeout_s=args.stop_timeout)
    sup.install_signal_handlers()
    specs: dict[str, Spec] = {}
    try:
        nodes = _start_nodes(sup, args, specs)
        url = ",".join(n.url for n in nodes)
        env = {
            **os.environ,
            "NATS_URL": url,
            "PYTHONUNBUFFERED": "1",
            "GOVERNOR_REPLICAS": "3",
            "KV_REPLICAS": "3",
        }
        workers = list(_WORKERS)
        influx = os.environ.get("INFLUX_URL", "") or start_influxd(sup, args)
        if influx:
            env["INFLUX_URL"] = influx
            workers.append("collector")
        for name in workers:
            for i in range(1, args.replicas + 1):
                own = {**env, **_gateway_ports(args, i)} if name == "gateway" else env
                spec = Spec([interpreter(), "-m", f"services.{name}"], own, worker=name)
                child = sup.start(f"{name}-{i}", spec.argv, env=own)
                specs[child.name] = spec
                worker_id = pinged(sup, child, url, args.ready_timeout, worker=name)
                sup.say(
                    f"{child.name} ready (pid {child.pid}, id {worker_id}, log {child.log_path})"
                )
                if name == "gateway" and (console := console_address(own)):
                    sup.say(f"console of {child.name} at {console}")
        if args.mode == "demo":
            demo = sup.start(
                "demo", [interpreter(), "-m", "services.demo"], env=env, stdout_to_terminal=True
            )
            sup.say(f"demo started (pid {demo.pid}, log {demo.log_path})")
        else:
            sup.say(f"up; NATS_URL={url}; Ctrl-C stops everything")
        chaos = None
        if args.chaos:
            chaos = Chaos(sup, specs, every_s=args.chaos_every, down_s=args.chaos_down)
            sup.say(
                f"chaos: every {args.chaos_every:g} s one of {len(specs)} nodes and replicas "
                "is killed (SIGKILL) and started again"
            )
        return _watch(sup, chaos)
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


def _gateway_ports(args: argparse.Namespace, replica: int) -> dict[str, str]:
    """Replica `replica`'s DNS and HTTP ports: the first ones plus replica - 1, or free
    ones (kept across a chaos restart: they are in its Spec)."""
    ports = {}
    for var, first in (
        ("GATEWAY_DNS_PORT", args.dns_port),
        ("GATEWAY_HTTP_PORT", args.gateway_port),
    ):
        port = _free_port() if first < 0 else first + replica - 1
        if first > 0 and listening(port):
            raise StartupError(
                f"something already listens on 127.0.0.1:{port} (gateway-{replica}'s "
                f"{var}): stop it, or pick other first ports with --dns-port and "
                "--gateway-port (-1: any free port)"
            )
        ports[var] = str(port if first else 0)
    return ports


if __name__ == "__main__":
    sys.exit(run())
