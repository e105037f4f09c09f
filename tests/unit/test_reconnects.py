"""What nats-py is told before each reconnect attempt (services/bus.py Reconnects)."""

from __future__ import annotations

import random
from urllib.parse import urlparse

from nats.aio.client import Server

from services.bus import Reconnects
from services.retry import Backoff

POLICY = Backoff(base_s=0.5, cap_s=5.0)


def servers(*tries: int) -> list[Server]:
    return [
        Server(uri=urlparse(f"nats://10.0.0.{n}:4222"), reconnects=t) for n, t in enumerate(tries)
    ]


def highest(_low: float, high: float) -> float:
    return high


def test_the_first_attempt_of_an_outage_goes_at_once_then_the_policy_waits() -> None:
    hook = Reconnects(POLICY.retry(uniform=highest))
    pool = servers(0)
    assert [hook(pool, {})[1] for _ in range(5)] == [0.0, 1.5, 4.5, 5.0, 5.0]


def test_connected_again_the_next_outage_starts_afresh() -> None:
    hook = Reconnects(POLICY.retry(uniform=highest))
    for _ in range(4):
        hook(servers(0), {})
    hook.reset()
    assert [hook(servers(0), {})[1] for _ in range(2)] == [0.0, 1.5]


def test_the_server_tried_least_is_tried_next() -> None:
    hook = Reconnects(POLICY.retry(uniform=highest))
    pool = servers(3, 1, 2)
    assert hook(pool, {})[0] is pool[1]


def test_two_clients_that_lost_the_server_together_drift_apart() -> None:
    a = Reconnects(POLICY.retry(uniform=random.Random(1).uniform))
    b = Reconnects(POLICY.retry(uniform=random.Random(2).uniform))
    waits_a = [a(servers(0), {})[1] for _ in range(4)]
    waits_b = [b(servers(0), {})[1] for _ in range(4)]
    assert waits_a[0] == waits_b[0] == 0.0
    assert all(x != y for x, y in zip(waits_a[1:], waits_b[1:], strict=True))
