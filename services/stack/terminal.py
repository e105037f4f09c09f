"""Ctrl-C for the stack alone: the terminal's foreground, taken as a job-control shell does.

A terminal sends Ctrl-C's SIGINT to its whole foreground process group. Run by `just up`,
that group holds `just` too, and `just`, once it has seen a SIGINT, exits 130 with
"error: interrupted by SIGINT" whatever its recipe returned. So the stack moves into a
process group of its own and makes it the terminal's foreground: Ctrl-C reaches only the
stack, which stops its children in order and exits 0; the terminal is given back on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["foreground"]


@contextmanager
def _no_sigttou() -> Iterator[None]:
    # tcsetpgrp from a background group would stop us with SIGTTOU; shells ignore it too
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTTOU, previous)


@contextmanager
def foreground() -> Iterator[None]:
    """Own the terminal's Ctrl-C inside the block, when there is a terminal to own."""
    fd = -1
    with contextlib.suppress(OSError, ValueError):
        fd = sys.stdin.fileno()
    try:
        before = os.tcgetpgrp(fd) if fd >= 0 and os.isatty(fd) else -1
    except OSError:
        before = -1
    if before != os.getpgrp() or before == os.getpid():  # not in front, or our own already
        yield
        return
    try:
        os.setpgid(0, 0)
        with _no_sigttou():
            os.tcsetpgrp(fd, os.getpgrp())
    except OSError:  # a session leader, or no job control: leave things as they are
        yield
        return
    try:
        yield
    finally:
        with _no_sigttou(), contextlib.suppress(OSError):
            os.tcsetpgrp(fd, before)
