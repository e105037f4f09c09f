"""A real N-node nats-server cluster for tests: routes on loopback ports picked here,
one JetStream store per node, SIGKILL and restart of any node with its store kept.

    cluster = NatsCluster(tmp_path / "nats", size=3).start()   # waits: routes, meta leader
    cluster.url                # "nats://127.0.0.1:p1,nats://127.0.0.1:p2,..." for NATS_URL
    cluster.urls               # one per node
    cluster.nodes[i].kill()    # SIGKILL, as a crash would
    cluster.nodes[i].start()   # same ports, same store; then cluster.wait_ready()
    cluster.node_named("n2")   # by server_name, as JetStream reports a stream's leader

A node may run inside a network namespace (`prefix=["ip", "netns", "exec", ns]`, with
`host` an address of that namespace): see tests/netns.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from natsserver import kill_process, nats_server_binary, start_logged, stop_process
from ports import free_port
from waiting import until, until_sync

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["ClusterNode", "NatsCluster", "free_port"]


class ClusterNode:
    """One node: a config file, a log, a store; `kill()` and `start()` keep all three."""

    def __init__(  # a node's whole identity, each part a test may set
        self,
        workdir: Path,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cluster_port: int = 0,
        http_port: int = 0,
        prefix: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.host = host
        self.port = port or free_port(host if not prefix else "127.0.0.1")
        self.cluster_port = cluster_port or free_port(host if not prefix else "127.0.0.1")
        self.http_port = http_port or free_port(host if not prefix else "127.0.0.1")
        self.prefix = list(prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "nats.log"
        self.conf_path = workdir / "nats.conf"
        self.store = workdir / "js"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def route(self) -> str:
        return f"nats://{self.host}:{self.cluster_port}"

    def write_conf(self, cluster_name: str, routes: Sequence[str], extra: str = "") -> None:
        others = ", ".join(f'"{r}"' for r in routes if r != self.route)
        self.conf_path.write_text(
            f"""server_name: {self.name}
listen: "{self.host}:{self.port}"
http: "{self.host}:{self.http_port}"
jetstream {{ store_dir: "{self.store}" }}
cluster {{
  name: {cluster_name}
  listen: "{self.host}:{self.cluster_port}"
  routes: [{others}]
}}
# a dead peer or client is noticed within a few seconds, not two minutes
ping_interval: "2s"
ping_max: 2
{extra}
"""
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> ClusterNode:
        """Start the process and wait for `Server is ready` (not for JetStream: see
        NatsCluster.wait_ready)."""
        args = [*self.prefix, nats_server_binary(), "-c", str(self.conf_path)]
        self.proc, _ = start_logged(args, self.log_path, timeout, f"nats-server {self.name}")
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        kill_process(self.proc)

    def stop(self) -> None:
        stop_process(self.proc)

    def monitor(self, path: str, timeout: float = 1.0) -> tuple[int, Any]:
        """GET the node's monitoring endpoint: (status, decoded JSON), (0, None) if down."""
        url = f"http://{self.host}:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # our own node
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, ValueError):
            return 0, None

    def healthy(self) -> bool:
        """Up, routed, and JetStream current with a meta leader (`/healthz` says ok)."""
        status, body = self.monitor("/healthz")
        return status == 200 and isinstance(body, dict) and body.get("status") == "ok"

    def meta_leader(self) -> str:
        """The JetStream meta leader this node knows of, or "" for none."""
        _, body = self.monitor("/jsz")
        if not isinstance(body, dict):
            return ""
        return str((body.get("meta_cluster") or {}).get("leader") or "")

    def peers(self) -> set[str]:
        """The names of the nodes this one has a route to (a peer has a pool of routes)."""
        _, body = self.monitor("/routez")
        if not isinstance(body, dict):
            return set()
        return {str(r.get("remote_name", "")) for r in body.get("routes") or []}


class NatsCluster:
    """N nodes named n1..nN, routed to one another, each with its own JetStream store."""

    def __init__(
        self,
        workdir: Path,
        size: int = 3,
        *,
        name: str = "baton",
        nodes: Sequence[ClusterNode] | None = None,
        extra: str = "",
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.extra = extra
        self.nodes = (
            list(nodes)
            if nodes
            else [ClusterNode(workdir / f"n{i}", f"n{i}") for i in range(1, size + 1)]
        )
        routes = [n.route for n in self.nodes]
        for node in self.nodes:
            node.write_conf(name, routes, extra)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-joined: a NATS_URL value."""
        return ",".join(self.urls)

    def node_named(self, server_name: str) -> ClusterNode:
        for node in self.nodes:
            if node.name == server_name:
                return node
        msg = f"no node named {server_name!r} in {[n.name for n in self.nodes]}"
        raise KeyError(msg)

    def start(self, timeout: float = 30.0) -> NatsCluster:
        for node in self.nodes:
            node.start()
        self.wait_ready(timeout)
        return self

    def _not_ready(self) -> str:
        """Why the cluster is not ready yet ("" when every running node is healthy, fully
        routed, and agrees on a meta leader). A node not running (killed) is left out."""
        running = [n for n in self.nodes if n.running]
        leaders = {n.meta_leader() for n in running}
        state = {n.name: (n.healthy(), sorted(n.peers())) for n in running}
        if (
            all(healthy for healthy, _ in state.values())
            and all(len(peers) >= len(running) - 1 for _, peers in state.values())
            and len(leaders) == 1
            and "" not in leaders
        ):
            return ""
        return f"(healthy, peers) {state}, meta leaders {leaders}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every running node is healthy, fully routed, and agrees on a meta leader.

        Blocks the thread: from a coroutine, await `ready()` instead, or the event loop
        (and every heartbeat it sends) stops meanwhile.
        """
        try:
            until_sync(lambda: not self._not_ready(), timeout, interval=0.05)
        except AssertionError:
            msg = f"cluster not ready in {timeout} s: {self._not_ready()}"
            raise RuntimeError(msg) from None

    async def ready(self, timeout: float = 30.0) -> None:
        """`wait_ready` for a coroutine: the event loop keeps running between checks."""
        try:
            await until(lambda: not self._not_ready(), timeout, interval=0.05)
        except AssertionError:
            msg = f"cluster not ready in {timeout} s: {self._not_ready()}"
            raise RuntimeError(msg) from None

    def kill(self, index: int) -> ClusterNode:
        node = self.nodes[index]
        node.kill()
        return node

    def restart(self, index: int, timeout: float = 30.0) -> ClusterNode:
        """SIGKILL node `index`, start it again on its ports and store, wait for the cluster."""
        node = self.nodes[index]
        node.kill()
        node.start()
        self.wait_ready(timeout)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def env(self, **extra: str) -> dict[str, str]:
        import os  # noqa: PLC0415  # only the subprocess helpers need it

        return {**os.environ, "NATS_URL": self.url, **extra}
