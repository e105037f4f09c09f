"""Two network namespaces joined by one veth pair, for partition tests (iproute2, root).

    pair = NetnsPair.create()        # side A 10.a.b.1/30, side B 10.a.b.2/30, both up
    pair.prefix("b")                 # ["ip", "netns", "exec", <B>]: run a process in B
    with pair.entered("a"): ...      # this thread's new sockets (and children) live in A
    pair.cut() / pair.heal()         # B's end of the link down / up: nothing crosses
    pair.destroy()                   # both namespaces (and the veth) gone

Nothing is added to the machine's own namespace: every address and link lives in the two
namespaces made here, so a test cannot disturb anything else on a shared machine. The
test process joins side A with setns(2) (network namespaces are per thread), which is
why nodes on side A listen on A's address and the test reaches B over the veth.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["NetnsPair", "netns_unavailable"]

_CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, check=False)  # noqa: S603, S607
    if done.returncode != 0:
        msg = f"ip {' '.join(args)}: {done.stderr.decode().strip()}"
        raise RuntimeError(msg)


def netns_unavailable() -> str:
    """Why `ip netns` cannot be used here ("" when it can): not root, no iproute2, ..."""
    name = f"btprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (RuntimeError, OSError) as exc:
        return f"ip netns is not permitted here: {exc}"
    with contextlib.suppress(RuntimeError, OSError):
        _ip("netns", "del", name)
    return ""


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class NetnsPair:
    a: str
    b: str
    addr_a: str
    addr_b: str

    @classmethod
    def create(cls) -> NetnsPair:
        tag = secrets.token_hex(3)
        # a random private /30; unseen outside the two namespaces, so it cannot collide
        x, y = secrets.randbelow(250) + 1, secrets.randbelow(63) * 4
        pair = cls(f"bt{tag}a", f"bt{tag}b", f"10.{x}.{y}.1", f"10.{x}.{y}.2")
        try:
            for ns in (pair.a, pair.b):
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip(
                "-n", pair.a, "link", "add", pair.veth_a, "type", "veth",
                "peer", "name", pair.veth_b, "netns", pair.b,
            )  # fmt: skip
            _ip("-n", pair.a, "addr", "add", f"{pair.addr_a}/30", "dev", pair.veth_a)
            _ip("-n", pair.b, "addr", "add", f"{pair.addr_b}/30", "dev", pair.veth_b)
            _ip("-n", pair.a, "link", "set", pair.veth_a, "up")
            _ip("-n", pair.b, "link", "set", pair.veth_b, "up")
        except BaseException:
            pair.destroy()
            raise
        return pair

    @property
    def veth_a(self) -> str:
        return f"{self.a}0"

    @property
    def veth_b(self) -> str:
        return f"{self.b}0"

    def prefix(self, side: str) -> list[str]:
        return ["ip", "netns", "exec", self.a if side == "a" else self.b]

    @contextlib.contextmanager
    def entered(self, side: str) -> Iterator[None]:
        """Move this thread into a side's namespace, and back to where it was after."""
        home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        try:
            _setns(f"/run/netns/{self.a if side == 'a' else self.b}")
            try:
                yield
            finally:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(home, _CLONE_NEWNET) != 0:  # pragma: no cover  # cannot fail as root
                    raise OSError(ctypes.get_errno(), "setns back to the test's namespace")
        finally:
            os.close(home)

    def cut(self) -> None:
        """Take B's end of the link down: no packet crosses, no connection is reset."""
        _ip("-n", self.b, "link", "set", self.veth_b, "down")

    def heal(self) -> None:
        _ip("-n", self.b, "link", "set", self.veth_b, "up")

    def destroy(self) -> None:
        for ns in (self.a, self.b):
            with contextlib.suppress(RuntimeError, OSError):
                _ip("netns", "del", ns)
