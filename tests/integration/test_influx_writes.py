"""The collector's write path against a real influxd (Debian's 1.6.7: the v1 API only).

Each test gets its own influxd (about 50 ms to start) on a free port. What is checked is
what InfluxDB stored, read back with InfluxQL. InfluxDB 2.x runs in Docker through
testcontainers when a Docker engine is reachable; that test is skipped otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest
from influxserver import InfluxServer, influxd_binary
from waiting import until

from schemas.balancer import CallReport
from services import logs
from services.collector import points
from services.collector.batcher import Batcher
from services.collector.writer import (
    RetryableWriteError,
    SetupError,
    V1Writer,
    V2Writer,
    rejected_count,
)
from services.config import SettingsError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

DB = "baton"
NO_DOCKER = "no Docker engine: InfluxDB 2.x test needs testcontainers"


# -- helpers ------------------------------------------------------------------------------
def _needs_influxd() -> None:
    if influxd_binary() is None:
        pytest.skip("influxd not installed: apt-get install influxdb (`just test` does)")


class AuthInfluxServer(InfluxServer):
    """The same influxd with `auth-enabled = true`."""

    def _config(self) -> Path:
        conf = super()._config()
        conf.write_text(conf.read_text().replace("[http]\n", "[http]\n  auth-enabled = true\n"))
        return conf

    def admin_query(self, q: str, auth: tuple[str, str] | None = None) -> None:
        data = urllib.parse.urlencode({"q": q}).encode()
        req = urllib.request.Request(f"{self.url}/query", data=data, method="POST")  # noqa: S310
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=5) as reply:  # noqa: S310
            assert b'"error"' not in reply.read()


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxServer]:
    _needs_influxd()
    server = InfluxServer(tmp_path / "influx").start()
    yield server
    server.stop()


@pytest.fixture
async def writer(influx: InfluxServer) -> AsyncIterator[V1Writer]:
    w = V1Writer(influx.url, DB, timeout_s=2)
    yield w
    await w.aclose()


class Calls:
    """`calls` points with latency_ms = 0, 1, 2, ... and distinct timestamps."""

    def __init__(self) -> None:
        self.n = 0
        self.clock = points.Clock()

    def next(self, service: str = "svc-a") -> str:
        report = CallReport(instance_id=f"i-{self.n % 3}", latency_ms=float(self.n), ok=True)
        self.n += 1
        return points.call(service, report, "z1", self.clock())

    def take(self, k: int) -> list[str]:
        return [self.next() for _ in range(k)]

    def conflicting(self) -> str:
        """The next point, but with latency_ms a string: a field type conflict."""
        line = self.next()
        bad = line.replace(f"latency_ms={float(self.n - 1)},", 'latency_ms="x",')
        assert bad != line
        return bad


def _series(server: InfluxServer, q: str, db: str = DB) -> list[dict[str, Any]]:
    result: Any = server.query(q, db=db)
    return list(result["results"][0].get("series") or [])


def stored(server: InfluxServer, what: str = 'count("latency_ms")', db: str = DB) -> int:
    """count() (or another one-value aggregate) of `calls`; 0 when there is none."""
    series = _series(server, f"SELECT {what} FROM calls", db)  # noqa: S608  # our own text
    return int(series[0]["values"][0][1]) if series else 0


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """`until` for a check that may query influxd, so it runs in a thread."""
    await until(lambda: asyncio.to_thread(check), timeout, interval=0.05, what=what)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there now


def balanced(b: Batcher) -> bool:
    s = b.stats
    return s["received"] == s["written"] + s["rejected"] + s["dropped"] + s["buffered"]


LOG = logs.get_logger("test")


# -- V1Writer ------------------------------------------------------------------------------
async def test_ensure_creates_the_database_and_points_land(
    influx: InfluxServer, writer: V1Writer
) -> None:
    await writer.ensure()
    await writer.ensure()  # idempotent
    names = [v[0] for v in _series(influx, "SHOW DATABASES", db="")[0]["values"]]
    assert DB in names

    clock = points.Clock()
    ok = CallReport(instance_id="i-1", latency_ms=12.5, ok=True)
    failed = CallReport(instance_id="i-2", latency_ms=250.0, ok=False)
    lines = [
        points.call("svc-a", ok, "eu-1", clock()),
        points.call("svc-a", failed, "", clock()),
    ]
    assert await writer.write(lines) == 0
    assert writer.last_rejection == ""

    rows = _series(influx, "SELECT * FROM calls")[0]
    got = [dict(zip(rows["columns"], v, strict=True)) for v in rows["values"]]
    assert [(r["service"], r["instance"], r["zone"], r["outcome"]) for r in got] == [
        ("svc-a", "i-1", "eu-1", "ok"),
        ("svc-a", "i-2", "none", "error"),  # an empty tag is written as "none"
    ]
    assert [(r["latency_ms"], r["error"]) for r in got] == [(12.5, 0), (250.0, 1)]
    tag_keys = _series(influx, "SHOW TAG KEYS FROM calls")[0]["values"]
    assert sorted(k[0] for k in tag_keys) == ["instance", "outcome", "service", "zone"]


async def test_bodies_are_gzipped(influx: InfluxServer) -> None:
    calls = Calls()
    lines = calls.take(2000)
    raw = len("\n".join(lines).encode())
    zipped = V1Writer(influx.url, DB)
    plain = V1Writer(influx.url, DB, gzip=False)
    try:
        await zipped.ensure()
        assert await zipped.write(lines[:1000]) == 0
        assert await plain.write(lines[1000:]) == 0
    finally:
        await zipped.aclose()
        await plain.aclose()
    assert stored(influx) == 2000  # influxd took both
    assert zipped.sent_bytes * 4 < raw / 2
    assert plain.sent_bytes > raw / 2 - 1000


async def test_a_bad_database_name_is_a_setup_error(influx: InfluxServer) -> None:
    bad = V1Writer(influx.url, "bad/name")
    try:
        with pytest.raises(SetupError, match=r"could not create database 'bad/name': invalid name"):
            await bad.ensure()
    finally:
        await bad.aclose()
    with pytest.raises(SettingsError, match="INFLUX_DATABASE is empty"):
        V1Writer(influx.url, "")
    with pytest.raises(SettingsError, match="http://"):
        V1Writer("127.0.0.1:8086", DB)


async def test_a_missing_database_is_a_setup_error(writer: V1Writer) -> None:
    with pytest.raises(SetupError, match=r'database not found: "baton".*CREATE DATABASE'):
        await writer.write(Calls().take(1))


async def test_unreachable_influxdb_is_retryable() -> None:
    url = closed_port_url()
    for w in (V1Writer(url, DB, timeout_s=2), V2Writer(url, "t", "o", DB, timeout_s=2)):
        try:
            with pytest.raises(RetryableWriteError, match="cannot reach InfluxDB at"):
                await w.ensure()
            with pytest.raises(RetryableWriteError, match="cannot reach InfluxDB at"):
                await w.write(Calls().take(1))
        finally:
            await w.aclose()


async def test_v2_writer_on_influxdb_1_6_says_what_is_wrong(influx: InfluxServer) -> None:
    w = V2Writer(influx.url, "token", "org", DB)
    try:
        with pytest.raises(SetupError, match=r"404.*influx bucket create.*1.6 and 1.7 have no v2"):
            await w.ensure()
    finally:
        await w.aclose()


async def test_credentials_refused_and_write_only_users(tmp_path: Path) -> None:
    _needs_influxd()
    server = AuthInfluxServer(tmp_path / "auth").start()
    admin = ("admin", "secret")
    try:
        server.admin_query("CREATE USER admin WITH PASSWORD 'secret' WITH ALL PRIVILEGES")
        server.admin_query("CREATE DATABASE other", auth=admin)
        server.admin_query("CREATE USER w WITH PASSWORD 'pw'", auth=admin)
        server.admin_query("GRANT WRITE ON other TO w", auth=admin)
        cases = [  # user, password, database, the error (None: ensure and write work)
            ("admin", "wrong", DB, "refused the credentials"),
            ("", "", DB, "refused the credentials"),  # no user at all
            ("admin", "secret", DB, None),
            # may write to `other` but not create databases: the database is checked instead
            ("w", "pw", "other", None),
            ("w", "pw", "absent", "may not create it"),
        ]
        for user, password, database, error in cases:
            w = V1Writer(server.url, database, user=user, password=password)
            try:
                if error is None:
                    await w.ensure()
                    assert await w.write(Calls().take(3)) == 0
                else:
                    with pytest.raises(SetupError, match=error):
                        await w.ensure()
            finally:
                await w.aclose()
    finally:
        server.stop()


# -- partial writes ----------------------------------------------------------------------
def test_rejected_count_reads_the_server_messages() -> None:
    conflict = (
        'partial write: field type conflict: input field "latency_ms" on measurement '
        '"calls" is type string, already exists as type float dropped=1'
    )
    assert rejected_count(conflict, 3) == 1
    unparsed = (
        "partial write: unable to parse 'garbage': missing fields\n"
        "unable to parse 'more garbage': invalid field format dropped=0"
    )
    assert rejected_count(unparsed, 4) == 2
    assert rejected_count("partial write: something dropped=", 4) == 1  # at least one
    assert rejected_count("field type conflict", 5) == 5  # not partial: none stored
    assert rejected_count("partial write error (1 accepted): 2/3 points rejected", 3) == 2


async def test_a_partial_write_rejects_only_the_bad_point(
    influx: InfluxServer, writer: V1Writer
) -> None:
    await writer.ensure()
    calls = Calls()
    async with Batcher(writer, LOG, flush_s=0.05) as b:
        b.add_many(calls.take(3))  # latency_ms is a float from now on
        await eventually(lambda: b.stats["written"] == 3, "the first batch written")
        b.add_many([calls.next(), calls.conflicting(), calls.next()])  # one batch
        await eventually(lambda: b.stats["rejected"] == 1, "the bad point rejected")
        assert b.stats["written"] == 5
        assert stored(influx) == 5  # the good points of that batch are stored
        assert "field type conflict" in writer.last_rejection
        assert b.stats["retried"] == 0  # never sent again
        assert balanced(b)


async def test_unparseable_lines_are_counted_and_the_rest_stored(
    influx: InfluxServer, writer: V1Writer
) -> None:
    await writer.ensure()
    calls = Calls()
    lines = [calls.next(), "garbage", "more garbage here", calls.next()]
    assert await writer.write(lines) == 2
    assert "unable to parse 'garbage'" in writer.last_rejection
    assert stored(influx) == 2


async def test_a_type_conflict_on_a_new_field_inside_one_batch_stores_nothing(
    influx: InfluxServer, writer: V1Writer
) -> None:
    # InfluxDB 1.x rejects the whole batch here (400 without "partial write"): counted so
    await writer.ensure()
    lines = ["m,s=a f=1.0 1", 'm,s=a f="x" 2', "m,s=a f=2.0 3"]
    assert await writer.write(lines) == 3
    assert writer.last_rejection == "field type conflict"
    assert _series(influx, "SELECT count(*) FROM m") == []


# -- the Batcher ----------------------------------------------------------------------------
async def test_a_full_batch_is_written_before_flush_s(writer: V1Writer) -> None:
    calls = Calls()
    async with Batcher(writer, LOG, batch_points=100, flush_s=30) as b:
        b.add_many(calls.take(100))
        # the database does not exist yet: the SetupError makes the batcher create it
        await eventually(lambda: b.stats["written"] == 100, "the full batch", timeout=5)
        assert b.stats["retried"] == 1
        b.add(calls.next())
        await asyncio.sleep(0.3)  # a short wait for what must NOT happen: a lone point
        assert b.stats["buffered"] == 1  # waits for flush_s


@pytest.mark.parametrize("writers", [1, 2, 4])
async def test_a_backlog_is_written_in_full_batches_once_each(
    influx: InfluxServer, writer: V1Writer, writers: int
) -> None:
    # Several loops write side by side; a loop woken when another took the full batch
    # must not send a partial one (it would leave a remainder waiting for flush_s).
    await writer.ensure()
    calls = Calls()
    async with Batcher(writer, LOG, batch_points=100, flush_s=30, writers=writers) as b:
        for _ in range(40):  # in quarters of a batch, so loops wake to partial ones
            b.add_many(calls.take(25))
            await asyncio.sleep(0.001)  # pacing: the loops run between the quarters
        await eventually(lambda: b.stats["written"] == 1000, "ten full batches", timeout=5)
        assert b.stats["buffered"] == 0
    assert stored(influx) == 1000  # each point once: InfluxDB holds exactly as many


async def test_a_loop_woken_for_a_batch_another_took_sends_no_partial_one(
    writer: V1Writer,
) -> None:
    await writer.ensure()
    calls = Calls()
    async with Batcher(writer, LOG, batch_points=100, flush_s=30, writers=2) as b:
        await until(lambda: len(b._wake._waiters) == 2)  # both loops wait
        b.add_many(calls.take(150))  # wakes both loops; one full batch, half of another
        await eventually(lambda: b.stats["written"] == 100, "the full batch", timeout=5)
        await asyncio.sleep(0.3)  # a short wait for what must NOT happen: a partial batch
        assert b.stats["buffered"] == 50  # waits for more points, or flush_s


async def test_a_lone_point_is_written_after_flush_s(writer: V1Writer) -> None:
    await writer.ensure()
    async with Batcher(writer, LOG, flush_s=0.2) as b:
        b.add(Calls().next())
        await eventually(lambda: b.stats["written"] == 1, "the lone point", timeout=5)


async def test_points_added_during_an_outage_all_arrive(
    influx: InfluxServer, writer: V1Writer
) -> None:
    await writer.ensure()
    calls = Calls()
    async with Batcher(writer, LOG, batch_points=200, flush_s=0.05, retry_max_s=0.5) as b:
        b.add_many(calls.take(100))
        await eventually(lambda: stored(influx) == 100, "the points before the outage")

        await asyncio.to_thread(influx.stop)
        # a count, not a clock: a loaded host must not shrink the outage's load below
        # what the end asserts (it used to run 2.5 s, and a slow loop added < 2,000)
        for _ in range(120):  # 2,400 points, about 1,000 a second when idle
            b.add_many(calls.take(20))
            await asyncio.sleep(0.02)  # pacing the load, not waiting for anything
        assert b.stats["written"] == 100
        assert b.stats["retried"] > 0
        await asyncio.to_thread(influx.start)  # same port, same data directory

        b.add_many(calls.take(50))
        stored_all = f"all {calls.n} points stored"
        await eventually(lambda: stored(influx) == calls.n, stored_all, timeout=30)
        await eventually(lambda: b.stats["buffered"] == 0, "an empty buffer")
    s = b.stats
    assert s["written"] == s["received"] == calls.n > 2000
    assert s["dropped"] == s["rejected"] == 0
    assert s["retried"] > 0
    assert stored(influx, 'count(distinct("latency_ms"))') == calls.n  # each point once


async def test_a_hung_influxdb_times_out_and_is_retried(influx: InfluxServer) -> None:
    assert influx.proc is not None
    w = V1Writer(influx.url, DB, timeout_s=0.5)
    calls = Calls()
    try:
        await w.ensure()
        async with Batcher(w, LOG, flush_s=0.05, retry_max_s=0.5) as b:
            os.kill(influx.proc.pid, signal.SIGSTOP)  # accepts connections, answers nothing
            try:
                with pytest.raises(RetryableWriteError, match=r"no answer .* within 0.5 s"):
                    await w.write(calls.take(1))
                b.add_many(calls.take(10))
                await eventually(lambda: b.stats["retried"] >= 1, "a timed-out write retried")
            finally:
                os.kill(influx.proc.pid, signal.SIGCONT)
            await eventually(lambda: b.stats["written"] == 10, "the batch written after all")
        assert stored(influx) in (10, 11)  # influxd may still apply the write that timed out
        assert b.stats["dropped"] == 0
    finally:
        await w.aclose()


async def test_a_full_buffer_drops_exactly_the_oldest_excess(
    influx: InfluxServer, writer: V1Writer
) -> None:
    await writer.ensure()
    await asyncio.to_thread(influx.stop)
    calls = Calls()
    async with Batcher(
        writer, LOG, batch_points=10, max_buffer=50, flush_s=0.05, retry_max_s=0.2
    ) as b:
        for line in calls.take(80):  # latency_ms 0..79
            b.add(line)
        assert b.stats == {
            "received": 80,
            "written": 0,
            "retried": 0,
            "dropped": 30,
            "rejected": 0,
            "buffered": 50,
        }
        await eventually(lambda: b.stats["retried"] >= 2, "retries while influxd is down")
        assert b.stats["dropped"] == 30  # retrying loses nothing
        await asyncio.to_thread(influx.start)
        await eventually(lambda: stored(influx) == 50, "the 50 buffered points")
    assert stored(influx, 'min("latency_ms")') == 30  # the oldest 30 were dropped
    assert stored(influx, 'max("latency_ms")') == 79
    assert b.stats["written"] == 50
    assert b.stats["dropped"] == 30
    assert balanced(b)


async def test_stop_writes_what_is_buffered(influx: InfluxServer, writer: V1Writer) -> None:
    await writer.ensure()
    calls = Calls()
    b = Batcher(writer, LOG, batch_points=500, flush_s=60)
    async with b:
        b.add_many(calls.take(1234))  # two full batches may go now, the rest waits
    # InfluxDB 1.x answers 204 once the points are stored: no waiting needed
    assert stored(influx) == 1234
    assert b.stats["written"] == 1234
    assert b.stats["buffered"] == b.stats["dropped"] == 0
    b.add(calls.next())  # after stop: counted, not kept
    assert b.stats["dropped"] == 1
    assert balanced(b)


async def test_stop_counts_what_it_cannot_write(influx: InfluxServer, writer: V1Writer) -> None:
    await writer.ensure()
    await asyncio.to_thread(influx.stop)
    b = Batcher(writer, LOG, flush_s=0.05, stop_timeout_s=0.5)
    await b.start()
    b.add_many(Calls().take(100))
    await asyncio.wait_for(b.stop(), 30)  # only a guard against a hang: it gives up itself
    assert b.stats["dropped"] == 100
    assert b.stats["buffered"] == b.stats["written"] == 0
    assert balanced(b)


class _BuggyWriter(V1Writer):
    """A writer with a bug for one batch: the batcher must go on with the next."""

    async def write(self, lines: list[str]) -> int:
        if any("svc-bug" in line for line in lines):
            raise KeyError("a bug")
        return await super().write(lines)


async def test_a_bug_in_one_batch_does_not_stop_the_loop(influx: InfluxServer) -> None:
    w = _BuggyWriter(influx.url, DB)
    try:
        await w.ensure()
        calls = Calls()
        async with Batcher(w, LOG, flush_s=0.05) as b:
            b.add(calls.next("svc-bug"))
            await eventually(lambda: b.stats["dropped"] == 1, "the buggy batch dropped")
            b.add_many(calls.take(5))
            await eventually(lambda: b.stats["written"] == 5, "the next batch written")
        assert stored(influx) == 5
    finally:
        await w.aclose()


# -- InfluxDB 2.x, in Docker ------------------------------------------------------------
def _engine_answers() -> bool:
    """A connection to DOCKER_HOST (default: the local socket) opens. Checked by hand:
    docker-py leaks its socket when the engine is not there."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parsed = urllib.parse.urlsplit(host)
    try:
        if parsed.scheme == "unix":
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(parsed.path)
        elif parsed.scheme in ("tcp", "http", "https"):
            address = (parsed.hostname or "127.0.0.1", parsed.port or 2375)
            socket.create_connection(address, timeout=2).close()
    except OSError:
        return False
    return True  # or a scheme (ssh, npipe) left to docker-py


def _docker_missing() -> str | None:
    try:
        import docker  # noqa: PLC0415  # testcontainers' dependency, optional here
        import testcontainers.core.container  # noqa: F401, PLC0415
    except ImportError:
        return NO_DOCKER + " (not installed: pip install -e '.[dev]')"
    if not _engine_answers():
        return NO_DOCKER
    client = docker.from_env()
    try:
        client.ping()
    except Exception:  # noqa: BLE001  # any failure to reach the engine means: skip
        return NO_DOCKER
    finally:
        client.close()
    return None


@pytest.mark.timeout(300)  # the first run pulls the image
async def test_v2_writer_against_influxdb_2() -> None:
    reason = _docker_missing()
    if reason:
        pytest.skip(reason)
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415

    token, org = "baton-test-token", "baton"
    container = (
        DockerContainer("influxdb:2.7")
        .with_exposed_ports(8086)
        .with_env("DOCKER_INFLUXDB_INIT_MODE", "setup")
        .with_env("DOCKER_INFLUXDB_INIT_USERNAME", "baton")
        .with_env("DOCKER_INFLUXDB_INIT_PASSWORD", "baton-password")
        .with_env("DOCKER_INFLUXDB_INIT_ORG", org)
        .with_env("DOCKER_INFLUXDB_INIT_BUCKET", DB)
        .with_env("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN", token)
    )
    await asyncio.to_thread(container.start)
    try:
        host, port = container.get_container_host_ip(), container.get_exposed_port(8086)
        url = f"http://{host}:{port}"
        w = V2Writer(url, token, org, DB, timeout_s=5)
        try:

            async def set_up() -> bool:
                await w.ensure()
                return True

            # the image restarts influxd once its set-up is done
            await until(set_up, 60, interval=0.5, ignoring=(RetryableWriteError, SetupError))
            calls = Calls()
            assert await w.write(calls.take(3)) == 0
            assert await w.write([calls.next(), calls.conflicting()]) == 1  # 422: one rejected
            assert "partial write" in w.last_rejection
            assert await w.write(["garbage", calls.next()]) == 2  # 400: none stored
            for other, error in (
                (V2Writer(url, token, org, "missing"), "influx bucket create --name missing"),
                (V2Writer(url, "wrong-token", org, DB), "refused the credentials"),
            ):
                try:
                    with pytest.raises(SetupError, match=error):
                        await other.ensure()
                finally:
                    await other.aclose()
        finally:
            await w.aclose()

        def count() -> int:
            from influxdb_client.client.influxdb_client import InfluxDBClient  # noqa: PLC0415

            flux = (
                f'from(bucket: "{DB}") |> range(start: 0) '
                '|> filter(fn: (r) => r._measurement == "calls" and r._field == "latency_ms")'
                " |> group() |> count()"
            )
            with InfluxDBClient(url=url, token=token, org=org) as client:
                tables = client.query_api().query(flux)
                return sum(int(r.get_value()) for t in tables for r in t.records)

        assert await asyncio.to_thread(count) == 4  # 3 + the good one of the partial write
    finally:
        await asyncio.to_thread(container.stop)
