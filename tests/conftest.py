from __future__ import annotations

from typing import TYPE_CHECKING

import nats
import pytest
from natscluster import NatsCluster
from natsserver import NatsServer

from services import logs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from nats.aio.client import Client

logs.configure("WARNING", json=False)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    yield client
    await client.close()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three routed nodes, one JetStream store each (tests/natscluster.py); stopped after."""
    cluster = NatsCluster(tmp_path / "cluster", size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
