"""A real InfluxDB 1.x (Debian's `influxd`, 1.6.7 here) for tests: temp dirs, free ports.

influxd cannot pick its own port, so a free one is found by binding port 0 first.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Self

from ports import free_port
from waiting import until_sync

from services.stack.local import INFLUXD_CONF

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["InfluxServer", "influxd_binary"]


def influxd_binary() -> str | None:
    return shutil.which("influxd")


class InfluxServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "influxd.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        d = self.workdir
        conf = d / "influxdb.conf"
        conf.write_text(INFLUXD_CONF.format(d=d, port=self.port, rpc=free_port()))
        return conf

    def start(self, timeout: float = 20.0) -> Self:
        binary = influxd_binary()
        if binary is None:
            msg = "influxd not found: apt-get install -y influxdb (just test installs it)"
            raise RuntimeError(msg)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                [binary, "-config", str(self._config())], stdout=log, stderr=log
            )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                msg = f"influxd exited: {self.log_path.read_text()[-2000:]}"
                raise RuntimeError(msg)
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as reply:  # noqa: S310
                    return bool(reply.status == 204)
            except (urllib.error.URLError, ConnectionError, OSError):
                return False

        until_sync(ready, timeout, interval=0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def query(self, q: str, db: str = "baton") -> dict[str, object]:
        """Run InfluxQL through the v1 HTTP API (as Grafana does); the decoded JSON."""
        url = f"{self.url}/query?" + urllib.parse.urlencode({"db": db, "q": q, "epoch": "ms"})
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310
            result: dict[str, object] = json.loads(reply.read())
            return result
