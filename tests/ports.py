"""A free loopback port for a server that cannot pick its own (a cluster node whose routes
name each other's ports, a port passed on a command line).

The OS's pick (bind to port 0, close) comes from the ephemeral range, the very range every
outgoing connection on the machine takes its local port from: between the pick and the
server's bind, any client's connection may take it, and the server dies with "address
already in use" (a cluster node did, on a loaded machine). So the pick is made below the
ephemeral range, where only listeners live, at random, and checked free for TCP and UDP;
never a port this process handed out before (a cluster's nine picks, each free when
picked but none bound yet, would otherwise collide in about one setup in 750).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]

_LOWEST = 10_000  # above the well-known and registered ports most daemons take
_DEFAULT_EPHEMERAL = (32_768, 60_999)  # Linux's default ip_local_port_range
_rng = random.SystemRandom()  # independent of tests that seed the module's random
_given: set[int] = set()  # handed out by this process: maybe not bound yet, or bound later


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL
    return low, high


def _bindable(host: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing holds now, for TCP and UDP, outside the ephemeral range."""
    low, high = _ephemeral_range()
    candidates = [*range(_LOWEST, low), *range(high + 1, 65_536)]
    if len(candidates) < 1_000:  # an unusual range: the OS's pick is all there is
        with socket.socket() as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])
    picks: list[int] = _rng.sample(candidates, 200)
    for port in picks:
        if port not in _given and _bindable(host, port):
            _given.add(port)
            return port
    msg = f"no free port on {host} among 200 tried outside the ephemeral range {low}-{high}"
    raise RuntimeError(msg)
