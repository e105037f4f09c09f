"""The demo fleet (in-process and as `python -m services.demo`) and the local stack
supervisor (`python -m services.stack`), against real workers and nats-servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats
import pytest
from ports import free_port
from waiting import until
from workers import run_balancer, run_governor, run_registry

from schemas import subjects
from schemas.balancer import CallReports
from schemas.governor import ConfigApplied, ConfigChange, OverridePatch
from schemas.registry import InstanceEvent
from services import logs
from services.balancer.worker import Balancer, BalancerSettings
from services.bus import Bus, connect
from services.config import BusSettings
from services.demo.demo import run
from services.demo.operator import next_strategy
from services.demo.settings import DemoSettings
from services.registry.worker import Registry, RegistrySettings

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.subscription import Subscription
    from natsserver import NatsServer

SERVICE = "demo-api"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def stack(nats_server: NatsServer) -> AsyncIterator[None]:
    """Registry and balancer, in-process, each on its own connection."""
    settings = BusSettings(url=nats_server.url, reconnect_wait_s=0.05, reconnect_max_s=0.5)
    reg_log, bal_log = logs.get_logger("registry"), logs.get_logger("balancer")
    async with (
        connect(settings, reg_log, name="registry") as reg_bus,
        Registry(reg_bus, RegistrySettings(settle_s=0), reg_log),
        connect(settings, bal_log, name="balancer") as bal_bus,
        Balancer(bal_bus, BalancerSettings(), bal_log),
    ):
        yield


async def until_seen(sub: Subscription, ids: set[str], kind: str, timeout: float = 10) -> None:
    """Wait until an event of `kind` (or, for "ok", a successful call report) names each id."""
    missing = set(ids)

    async def loop() -> None:
        while missing:
            msg = await sub.next_msg(timeout=None)
            if kind == "ok":  # the SDK batches its reports
                batch = msgspec.json.decode(msg.data, type=CallReports)
                missing.difference_update(r.instance_id for r in batch.reports if r.ok)
            else:
                event = msgspec.json.decode(msg.data, type=InstanceEvent)
                if event.kind == kind:
                    missing.discard(event.instance.instance_id)

    await asyncio.wait_for(loop(), timeout)


def ids(n: int) -> set[str]:
    return {f"{SERVICE}-{i + 1}" for i in range(n)}


# -- the demo ------------------------------------------------------------------------------
@pytest.mark.usefixtures("stack")
async def test_demo_instances_serve_real_http_calls(nc: Client) -> None:
    reports = await nc.subscribe(subjects.reports(SERVICE))
    events = await nc.subscribe(subjects.events(SERVICE))
    settings = DemoSettings(
        instances=3, clients=4, strategy="round_robin", think_ms=1, ttl_s=2, print_s=0.2
    )
    out, stop = io.StringIO(), asyncio.Event()
    demo = asyncio.create_task(run(nc, settings, logs.get_logger("demo"), stop, out))

    # A successful report follows a 2xx answer to a real GET on that instance's port.
    await until_seen(reports, ids(3), "ok")
    stop.set()
    fleet = await asyncio.wait_for(demo, 10)

    assert fleet is not None
    assert all(backend.served > 0 for backend in fleet.backends)
    assert len({backend.port for backend in fleet.backends}) == 3  # one server each
    table = out.getvalue()
    assert "strategy round_robin" in table
    for instance_id in ids(3):
        assert re.search(rf"^{instance_id}\s+zone-", table, re.MULTILINE), table
    await until_seen(events, ids(3), "deregistered")


async def printed(out: io.StringIO, pattern: str, since: int = 0, timeout: float = 15) -> int:
    """Wait until a table printed after offset `since` matches `pattern`; return where."""
    try:
        found = await until(
            lambda: re.search(pattern, out.getvalue()[since:], re.MULTILINE), timeout
        )
    except AssertionError:
        pytest.fail(f"{pattern!r} never printed:\n{out.getvalue()[since:][-3000:]}")
    return since + found.end()


async def test_demo_follows_the_service_config_and_its_operators(
    nats_server: NatsServer, nc: Client
) -> None:
    url = nats_server.url
    async with run_registry(url), run_balancer(url), run_governor(url):
        bus = Bus(nc, logs.get_logger("operator"))
        applied = await nc.subscribe(subjects.applied(SERVICE))
        settings = DemoSettings(
            instances=2, clients=2, think_ms=5, ttl_s=2, print_s=0.1, cycle_s=0.3, operator_s=0
        )
        out, stop = io.StringIO(), asyncio.Event()
        demo = asyncio.create_task(run(nc, settings, logs.get_logger("demo"), stop, out))

        # The rotation is an operator's change, through the governor, and resolves obey it.
        first = msgspec.json.decode((await applied.next_msg(timeout=15)).data, type=ConfigApplied)
        assert (first.actor, first.config.strategy) == ("demo-operator", next_strategy("weighted"))
        await printed(out, r"latest answer used (?!weighted)")

        # An operator's own `set strategy=` stays: the rotation stops, the clients follow.
        mine = ConfigChange(actor="ann", strategy="least_connections")
        await bus.request(subjects.change(SERVICE), mine, ConfigApplied)
        at = await printed(out, r"rotation stopped: ann changed the service's config")
        at = await printed(
            out,
            r"strategy least_connections \(the service's config.*latest answer used "
            r"least_connections$",
            at,
        )

        # The table shows the weight in effect and marks a drained instance.
        overrides: dict[str, OverridePatch | None] = {
            f"{SERVICE}-1": OverridePatch(weight=7),
            f"{SERVICE}-2": OverridePatch(drained=True),
        }
        await bus.request(
            subjects.change(SERVICE), ConfigChange(actor="ann", instances=overrides), ConfigApplied
        )
        at = await printed(out, rf"^{SERVICE}-1\s+zone-a\s+-\s+7\s", at)
        await printed(out, rf"^{SERVICE}-2\s+zone-b\s+drained\s+40\s", at)
        stop.set()
        await asyncio.wait_for(demo, 10)


async def test_demo_stopped_before_a_registry_answers(nc: Client) -> None:
    stop = asyncio.Event()
    demo = asyncio.create_task(
        run(nc, DemoSettings(instances=2), logs.get_logger("demo"), stop, io.StringIO())
    )
    attempts = await nc.subscribe(subjects.register(SERVICE))  # sees tries; never answers
    await attempts.next_msg(timeout=5)
    stop.set()
    assert await asyncio.wait_for(demo, 5) is None  # it gave up, closing what it started


async def demo_process(server: NatsServer, *args: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.demo",
        *args,
        env={**server.env, "DEMO_INSTANCES": "2", "DEMO_THINK_MS": "5", **env},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.usefixtures("stack")
async def test_demo_process_runs_for_a_fixed_duration(nats_server: NatsServer) -> None:
    # long enough that a loaded machine still gets every instance picked in the window
    proc = await demo_process(nats_server, "--duration", "4", DEMO_STRATEGY="round_robin")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    calls = re.findall(r"^calls (\d+),", text, re.MULTILINE)
    assert calls, text
    assert int(calls[-1]) > 0
    for instance_id in ids(2):
        row = re.search(
            rf"^{instance_id}\s+\S+\s+-\s+\d+\s+[\d.]+ ms\*?\s+([\d.]+)", text, re.MULTILINE
        )
        assert row, text
        assert float(row[1]) > 0  # picks/s over the last window


@pytest.mark.usefixtures("stack")
async def test_demo_process_stops_cleanly_on_sigterm(nats_server: NatsServer, nc: Client) -> None:
    events = await nc.subscribe(subjects.events(SERVICE))
    proc = await demo_process(nats_server)
    await until_seen(events, ids(2), "registered", timeout=20)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    await until_seen(events, ids(2), "deregistered")


def test_demo_rejects_an_unknown_strategy() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.demo", "--strategy", "fastest"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "strategy must be" in done.stderr


# -- the stack -----------------------------------------------------------------------------
StackFactory = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def stack_process(tmp_path: Path) -> Iterator[StackFactory]:
    """`python -m services.stack ARGS` with its state in tmp_path; killed if a test fails."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[str]:
        environ = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
        proc = subprocess.Popen(  # noqa: S603  # our own module, our own arguments
            [sys.executable, "-m", "services.stack", *args, "--root", str(tmp_path)],
            cwd=REPO,
            env={**environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()  # the stack stops its children, as on Ctrl-C
        proc.communicate(timeout=30)


def read_until(proc: subprocess.Popen[str], marker: str) -> str:
    """Lines of the stack's output up to the one holding `marker` (pytest-timeout bounds it)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    pytest.fail(f"{marker!r} never printed:\n{''.join(seen)}")


def pids(text: str) -> dict[str, int]:
    return {
        m[1]: int(m[2])
        for m in re.finditer(r"stack: ([\w-]+)(?: ready| started).*?pid (\d+)", text)
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ports the server picks, and an influxd port nobody else uses (the machine may run a stack)
async def ping_all(url: str, n: int) -> list[dict[str, Any]]:
    """The first `n` replies to one `$SRV.PING` on the server at `url`."""
    nc = await nats.connect(url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=n)
        await nc.publish(subjects.srv("PING"), b"", reply=inbox)
        return [json.loads((await sub.next_msg(timeout=5)).data) for _ in range(n)]
    finally:
        await nc.close()


FREE = (
    "--port",
    "-1",
    "--http-port",
    "-1",
    "--dns-port",
    "-1",
    "--gateway-port",
    "-1",
    "--influx-port",
    str(free_port()),
)


def test_stack_up_stops_everything_on_sigint(stack_process: StackFactory, tmp_path: Path) -> None:
    proc = stack_process("up", *FREE)
    text = read_until(proc, "Ctrl-C stops everything")
    children = pids(text)
    workers = {"registry", "balancer", "governor", "kv", "gateway", "prober", "collector"}
    assert set(children) == {"nats-server", "influxd", *workers}, text
    assert (tmp_path / ".baton" / "nats" / "jetstream").is_dir()  # the store is under root
    # Each worker was ready once it answered $SRV.PING for itself: its pid, its id.
    announced = dict(re.findall(r"stack: ([\w-]+) ready \(pid \d+, id (\w+),", text))
    assert set(announced) == workers, text
    url = re.search(r"nats-server ready at (nats://\S+) ", text)
    assert url, text
    pings = asyncio.run(ping_all(url[1], len(announced)))
    assert {(p["name"], p["id"], p["metadata"]["pid"]) for p in pings} == {
        (f"baton-{name}", worker_id, str(children[name])) for name, worker_id in announced.items()
    }

    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, text + rest
    assert "stack: stopped" in rest
    assert not [name for name, pid in children.items() if alive(pid)]


def test_stack_demo_finishes_with_the_demo(stack_process: StackFactory) -> None:
    proc = stack_process("demo", *FREE, DEMO_DURATION_S="1.5", DEMO_INSTANCES="2")
    out, _ = proc.communicate(timeout=50)
    assert proc.returncode == 0, out
    assert "stack: demo finished" in out
    assert re.search(rf"^{SERVICE}-2\s", out, re.MULTILINE), out  # the table came through
    assert not [name for name, pid in pids(out).items() if alive(pid)]


def test_stack_reports_a_worker_that_dies(stack_process: StackFactory) -> None:
    proc = stack_process("up", *FREE)
    children = pids(read_until(proc, "Ctrl-C stops everything"))
    os.kill(children["registry"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert f"registry (pid {children['registry']}) exited unexpectedly" in out
    assert not [name for name, pid in children.items() if alive(pid)]


def test_stack_refuses_a_port_in_use(stack_process: StackFactory) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = stack_process("up", "--port", str(port), "--http-port", "-1")
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert f"something already listens on 127.0.0.1:{port}" in out


# -- Ctrl-C at a terminal -------------------------------------------------------------------
def _read_pty(fd: int, until: str, deadline: float) -> str:
    """What the terminal shows, until `until` appears or the program closes it."""
    seen = b""
    while until.encode() not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    return seen.decode(errors="replace")


@pytest.mark.parametrize(
    ("recipe", "shown"), [("up", "Ctrl-C stops everything"), ("demo", "demo-api-2 ")]
)
def test_ctrl_c_on_just_ends_with_0_and_no_error_line(
    recipe: str, shown: str, tmp_path: Path
) -> None:
    """`just up` / `just demo` in a real terminal (a pty), stopped by typing Ctrl-C."""
    just = Path(sys.executable).parent / "just"
    primary, terminal = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env = {**environ, "DEMO_INSTANCES": "2", "DEMO_PRINT_S": "0.5"}
    args = [*FREE, "--root", str(tmp_path)]

    def take_the_terminal() -> None:  # in the child: the pty becomes its terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(  # noqa: S603  # our own recipe, our own arguments
        [str(just), recipe, *args],
        cwd=REPO,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=take_the_terminal,  # noqa: PLW1509  # only an ioctl
    )
    os.close(terminal)
    try:
        text = _read_pty(primary, shown, time.monotonic() + 60)
        assert shown in text, text
        os.write(primary, b"\x03")  # Ctrl-C, as typed: SIGINT to the foreground group
        text += _read_pty(primary, "\x00never", time.monotonic() + 40)
        assert proc.wait(timeout=10) == 0, text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            os.close(primary)
    assert "stack: stopped" in text
    errors = [
        line
        for line in text.splitlines()
        if line.lower().startswith("error") or "Traceback" in line or "interrupted" in line
    ]
    assert not errors, text
