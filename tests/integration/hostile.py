"""The fuzz suite's tools: a stack on its own event loop, hostile values, and the oracle.

Hypothesis drives plain (synchronous) tests, so the stack (registry, balancer, governor,
the config center and a gateway with HTTP and DNS) runs on an event loop in a thread of
its own, and each example hands it a coroutine (`Doors.run`). So one stack serves every
example of a test, and the test can measure around the whole run (memory, the gateway's
tasks).

`BATON_FUZZ_SEED` (set and printed by `just fuzz`) makes the run random under that seed,
with `BATON_FUZZ_EXAMPLES` examples a test; without it, the run is derandomized (the same
examples every time) and small, for `just test`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import aiohttp
import nats
from httpgateway import Http, stack
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from workers import run_kv

from schemas.registry import Registration

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from nats.aio.client import Client

__all__ = [
    "NUMBERS",
    "PROBE",
    "Doors",
    "fuzzing",
    "hostile_json",
    "hostile_text",
    "is_sentence",
    "rss_bytes",
]

T = TypeVar("T")
F = TypeVar("F", bound="Callable[..., Any]")

SEED: Final = os.environ.get("BATON_FUZZ_SEED", "")
EXAMPLES: Final = int(os.environ.get("BATON_FUZZ_EXAMPLES", "0") or 0)
ALL_PHASES: Final = tuple(Phase)
CALL_S: Final = 30.0  # a coroutine handed to the stack's loop that takes longer is stuck

# the instance every probe resolves (no fuzzed request names it)
PROBE: Final = Registration(
    instance_id="probe-7f3a-1", host="127.0.0.1", port=9001, zone="z1", ttl_s=3600
)
PROBE_SERVICE: Final = "probe-7f3a"


def fuzzing(default_examples: int) -> Callable[[F], F]:
    """Hypothesis' settings for one door: `default_examples` derandomized in `just test`,
    BATON_FUZZ_EXAMPLES under BATON_FUZZ_SEED in `just fuzz`."""

    def apply(test: F) -> F:
        test = settings(
            max_examples=(EXAMPLES or default_examples) if SEED else default_examples,
            derandomize=not SEED,
            # `just test` reports a failing example as found (shrinking one that hits the
            # stack can outlast the test's timeout); `just fuzz` shrinks it
            phases=ALL_PHASES if SEED else [p for p in ALL_PHASES if p is not Phase.shrink],
            deadline=None,  # a busy machine is slow; the budget is the example count
            database=None,  # a seed, not a local database, replays a run
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )(test)
        return seed(int(SEED))(test) if SEED else test

    return apply


# -- values ---------------------------------------------------------------------------
# what Python's int() or float() takes and Consul does not, and what overflows
NUMBERS: Final = (
    "0",
    "1",
    "-1",
    "+1",
    " 1",
    "1 ",
    "01",
    "1_000",
    "0x10",
    "1e3",
    "1.5",
    "NaN",
    "inf",
    "-inf",
    "\u0661\u0662",  # Arabic-Indic 12
    "\u00b2",  # superscript 2: str.isdigit() says yes, int() says no
    "\uff11\uff10",  # fullwidth 10
    "18446744073709551615",
    "18446744073709551616",
    "9" * 30,
    "9" * 5000,  # past int()'s 4300-digit limit
)
DURATIONS: Final = (
    "10s",
    "1m30s",
    "500ms",
    "1.5h",
    "0",
    "10",
    "-5s",
    "+1ms",
    "1d",
    "10 s",
    "1e3s",
    ".5s",
    "5.s",
    "99999999999999999999h",
    "9" * 400 + "s",
    "\u0661s",
    "1µs",
    "\uff11s",
)
WORDS: Final = (
    "",
    " ",
    "web",
    "a.b",
    "*",
    ">",
    "..",
    "../../etc/passwd",
    "%00",
    "%",
    "\x00",
    "\u202e",
    "\U0001f600",
    "null",
    "true",
    "{}",
    "[]",
    "a" * 65,
    "a" * 5000,
)
hostile_text = st.one_of(
    st.sampled_from(NUMBERS + DURATIONS + WORDS),
    st.text(max_size=30),
    st.text(st.characters(codec="utf-8"), min_size=100, max_size=2000),
)
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
hostile_json = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)


def is_sentence(text: str) -> bool:
    """An error a person can read: a few words, not an empty body or a bare code."""
    return len(text.split()) >= 3


def rss_bytes() -> int:
    """This process's resident memory (the gateway runs in it)."""
    with open("/proc/self/statm", encoding="ascii") as f:  # noqa: PTH123  # a proc file
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the stack ------------------------------------------------------------------------
class Doors:
    """A stack on an event loop in its own thread; `run(coro)` awaits there."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-stack")
        self.ready = threading.Event()
        self.http: Http | None = None
        self.session: aiohttp.ClientSession | None = None
        self.nc: Client | None = None
        self._stop: asyncio.Event | None = None
        self._main: Any = None

    def __enter__(self) -> Self:
        self.thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._hold(), self.loop)
        while not self.ready.wait(0.1):
            if self._main.done():
                self._main.result()  # the start failed: raise its error here
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._stop is not None:
                self.loop.call_soon_threadsafe(self._stop.set)
            self._main.result(CALL_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(CALL_S)
            self.loop.close()

    async def _hold(self) -> None:
        self._stop = asyncio.Event()
        async with run_kv(self.url), stack(self.url, dns_port=-1, http_timeout_s=10.0) as http:
            # a connection each: a request the gateway refuses mid-body may close its own
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as s:
                self.http, self.session = http, s
                self.nc = await nats.connect(self.url)
                try:
                    self.ready.set()
                    await self._stop.wait()
                finally:
                    await self.nc.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_S)

    @property
    def gateway(self) -> Any:
        assert self.http is not None
        return self.http.gateway
