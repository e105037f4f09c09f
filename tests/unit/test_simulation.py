"""The balancing simulation (tests/bench/sim_balancing.py) measures what it claims.

`just bench` reports its figures; these checks keep a broken simulator from reporting
nonsense: a healthy fleet shows the backends' own latency, a slow backend hurts a blind
strategy in proportion to its share, and the same seed gives the same answer.
"""

from __future__ import annotations

import math

import pytest
from sim_balancing import BACKENDS, MEDIAN_MS, ORACLE, Scenario, quantiles, simulate

from schemas.balancer import STRATEGIES
from schemas.governor import OutlierConfig

SHORT = Scenario(seconds=8, slow_from=2, slow_for=4)


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "most_connections"])
def test_a_healthy_fleet_shows_the_backends_own_latency(strategy: str) -> None:
    out = simulate(strategy, Scenario(seconds=4, slow_factor=1.0))
    q = quantiles(out.latencies)
    assert out.failed == 0
    assert q["0.5"] == pytest.approx(MEDIAN_MS, rel=0.05)
    # lognormal: p99 = median x e^(sigma x 2.326)
    assert q["0.99"] == pytest.approx(MEDIAN_MS * math.exp(Scenario.sigma * 2.326), rel=0.1)


def test_round_robin_feeds_the_slow_backend_its_share_and_fails_them() -> None:
    out = simulate("round_robin", SHORT)
    assert out.to_slow / out.in_window == pytest.approx(1 / BACKENDS, rel=0.05)
    # 20 x 167 ms is past the 1 s timeout nearly always: those calls fail
    assert out.failed == pytest.approx(out.to_slow, rel=0.05)


def test_least_response_time_starves_the_slow_backend() -> None:
    rr = simulate("round_robin", SHORT)
    lrt = simulate("least_response_time", SHORT)
    assert lrt.to_slow < rr.to_slow / 10
    assert quantiles(lrt.latencies)["0.99"] < quantiles(rr.latencies)["0.99"] / 2


def test_the_oracle_never_sends_to_the_slow_backend_while_it_is_slow() -> None:
    out = simulate(ORACLE, SHORT)
    assert out.to_slow == 0
    assert out.failed == 0


def test_a_seed_gives_the_same_figures() -> None:
    a = simulate("least_connections", SHORT)
    b = simulate("least_connections", SHORT)
    assert a.latencies == b.latencies
    assert (
        simulate("least_connections", Scenario(**{**SHORT.__dict__, "seed": 2})).latencies
        != a.latencies
    )


FAILING = Scenario(seconds=8, slow_factor=1.0, slow_for=0.0, fail_share=0.5, fail_from=2.0)


def test_without_ejection_round_robin_loses_the_failing_backends_share() -> None:
    out = simulate("round_robin", FAILING)
    assert out.ejections == []
    share = FAILING.fail_share / BACKENDS * (FAILING.seconds - FAILING.fail_from) / FAILING.seconds
    assert out.failed / (out.ok + out.failed) == pytest.approx(share, rel=0.15)


def test_ejection_takes_the_failing_backend_out_for_its_time() -> None:
    cfg = OutlierConfig(consecutive_failures=3, interval_s=10, base_ejection_s=30)
    on = simulate("round_robin", Scenario(**{**FAILING.__dict__, "ejection": cfg}))
    off = simulate("round_robin", FAILING)
    ((at, until, reason),) = on.ejections
    assert FAILING.fail_from < at < FAILING.fail_from + 2
    assert until - at == 30
    assert reason.startswith("consecutive_failures: 3")
    assert on.to_failing < off.to_failing / 3  # no picks once ejected
    assert on.failed < off.failed / 3
