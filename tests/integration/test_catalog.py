"""The catalog says what the workers really subscribe to, as the NATS server sees it.

Every worker runs on its own connection, named after it; the server's monitoring endpoint
(`/connz?subs=detail`) lists each connection's subscriptions with their queue groups. So a
subject a worker serves that the catalog lacks, a queue group renamed, or a receiver the
catalog forgets fails here, without looking inside the workers. That includes the NATS
services protocol (`$SRV.PING/INFO/STATS`, for all, the worker's name, its id), and the
readers of the JetStream logs: an ordered consumer's deliver subject is an inbox, so the
stream's consumers say which inbox, and the connection subscribed to it says who reads.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest
from natsserver import NatsServer
from waiting import until
from workers import (
    run_balancer,
    run_collector,
    run_gateway,
    run_governor,
    run_kv,
    run_prober,
    run_registry,
)

from schemas import subjects
from schemas.catalog import CHANNELS, PUBLISH, WORKERS
from services.micro import worker_name

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from nats.js import JetStreamContext

    from schemas.catalog import Channel

UNREACHABLE_INFLUX = "http://127.0.0.1:9"  # the collector subscribes while it waits for one


@pytest.fixture
def monitored_server(tmp_path: Path) -> Iterator[tuple[NatsServer, int]]:
    server = NatsServer(tmp_path / "nats", extra=["-m", "-1"]).start()
    found = re.search(r"Starting http monitor on [\d.]+:(\d+)", server.log_path.read_text())
    assert found, server.log_path.read_text()
    yield server, int(found[1])
    server.stop()


def _connz(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/connz?subs=detail&limit=1024"
    with urllib.request.urlopen(url, timeout=5) as reply:  # our own server
        connz: dict[str, Any] = json.load(reply)
    return connz


def _subscriptions(connz: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    """Connection name -> {(subject, queue group)}, without inboxes and NATS's own."""
    out: dict[str, set[tuple[str, str]]] = {}
    for conn in connz["connections"]:
        subs = out.setdefault(conn.get("name", ""), set())
        for sub in conn.get("subscriptions_list_detail", []):
            if not sub["subject"].startswith(("_INBOX.", "$")) or sub["subject"].startswith(
                subjects.SRV + "."
            ):
                subs.add((sub["subject"], sub.get("qgroup", "")))
    return out


def _inboxes(connz: dict[str, Any]) -> dict[str, set[str]]:
    """Connection name -> the inboxes it subscribes to (JetStream deliver subjects too)."""
    return {
        conn.get("name", ""): {
            sub["subject"]
            for sub in conn.get("subscriptions_list_detail", [])
            if sub["subject"].startswith("_INBOX.")
        }
        for conn in connz["connections"]
    }


async def _deliveries(js: JetStreamContext) -> dict[str, set[str]]:
    """Each JetStream log's subject prefix -> the deliver subjects of its consumers."""
    streams = {
        subjects.CONFIG_LOG: subjects.CONFIG_STREAM,
        subjects.OUTLIER_LOG: subjects.OUTLIER_STREAM,
        subjects.KV_LOG: subjects.KV_STREAM,
    }
    return {
        log: {c.config.deliver_subject or "" for c in await js.consumers_info(stream)}
        for log, stream in streams.items()
    }


def _worker_id(subs: set[tuple[str, str]], worker: str) -> str:
    """The worker's NATS micro id, from its `$SRV.PING.<name>.<id>` subscription."""
    prefix = subjects.srv("PING", worker_name(worker)) + "."
    ids = {s.removeprefix(prefix) for s, _ in subs if s.startswith(prefix)}
    assert len(ids) == 1, f"the {worker} announces ids {ids} on $SRV.PING.<name>.<id>"
    return ids.pop()


def _subject(ch: Channel, worker: str, worker_id: str) -> str:
    """The subject the worker subscribes to for the entry (every service: `>`)."""
    if ch.name.startswith(subjects.SRV):
        return ch.address.format(name=worker_name(worker), id=worker_id)
    return subjects.every(ch.name) if ch.parameters else ch.address


def _named(ch: Channel) -> set[str]:
    """The workers the entry's `receivers` names."""
    return set(re.findall(r"[a-z]+", ch.receivers)) & set(WORKERS)


async def test_catalog_matches_what_the_workers_subscribe(
    monitored_server: tuple[NatsServer, int],
) -> None:
    server, port = monitored_server
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(run_registry(server.url))
        await stack.enter_async_context(run_governor(server.url))
        await stack.enter_async_context(run_kv(server.url))
        balancer = await stack.enter_async_context(run_balancer(server.url))
        await asyncio.wait_for(balancer.sync.synced.wait(), 5)
        await stack.enter_async_context(run_collector(server.url, UNREACHABLE_INFLUX))
        # with both listeners on: neither may subscribe to anything the catalog lacks
        gateway = await stack.enter_async_context(
            run_gateway(server.url, dns_port=-1, http_port=-1)
        )
        await asyncio.wait_for(gateway.view.synced.wait(), 5)
        await until(lambda: gateway.view.outliers.following, what="the gateway's ejection watch")
        prober = await stack.enter_async_context(run_prober(server.url))
        await asyncio.wait_for(prober.sync.synced.wait(), 5)
        connz = await asyncio.to_thread(_connz, port)
        deliveries = await _deliveries(balancer.bus.nc.jetstream())
    seen = _subscriptions(connz)
    inboxes = _inboxes(connz)

    # JetStream logs' readers are ordered consumers: they subscribe to a deliver inbox
    internal = (subjects.CONFIG_LOG, subjects.OUTLIER_LOG, subjects.KV_LOG)
    for log in (c for c in CHANNELS if c.name in internal):
        readers = {w for w in WORKERS if inboxes.get(w, set()) & deliveries[log.name]}
        assert readers == _named(log), f"{log.address}: receivers say {log.receivers!r}"
    channels = [ch for ch in CHANNELS if ch.name not in internal]
    ids = {worker: _worker_id(seen.get(worker, set()), worker) for worker in WORKERS}
    for worker in WORKERS:
        by_subject = {_subject(ch, worker, ids[worker]): ch for ch in channels}
        for subject, _queue in seen[worker]:
            ch = by_subject.get(subject)
            assert ch is not None, f"the {worker} subscribes to {subject}: add it to the catalog"
            assert worker in _named(ch), f"{ch.address}: name the {worker} in its receivers"
    for ch in channels:
        subscribed = {w for w in WORKERS if any(s == _subject(ch, w, ids[w]) for s, _ in seen[w])}
        assert subscribed == _named(ch), f"{ch.address}: receivers say {ch.receivers!r}"
        if ch.op != PUBLISH:  # the worker that answers (all named: every one), in its queue
            first = ch.receivers.split()[0]
            answerers = [first] if first in WORKERS else sorted(_named(ch))
            for w in answerers:
                sub = (_subject(ch, w, ids[w]), ch.queue)
                assert sub in seen[w], f"{ch.address}: the {w}'s queue is not {ch.queue!r}"
