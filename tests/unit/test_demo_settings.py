"""The demo's strategy rules: who decides the strategy, and the rotation's order."""

from __future__ import annotations

import pytest

from schemas.balancer import STRATEGIES
from services.demo.operator import next_strategy
from services.demo.settings import DemoSettings


@pytest.mark.parametrize("unset", ["", "default"])
def test_unset_follows_the_service_config_and_rotates_it(unset: str) -> None:
    settings = DemoSettings(strategy=unset)
    assert settings.per_request is None
    assert settings.rotates
    assert not DemoSettings(strategy=unset, cycle_s=0).rotates


def test_demo_strategy_is_asked_in_every_request_and_nothing_rotates() -> None:
    settings = DemoSettings(strategy="least_connections")
    assert settings.per_request == "least_connections"
    assert not settings.rotates


def test_the_rotation_visits_every_strategy_and_wraps() -> None:
    seen, current = [], STRATEGIES[-1]
    for _ in STRATEGIES:
        current = next_strategy(current)
        seen.append(current)
    assert seen == list(STRATEGIES)
    assert next_strategy("no-such") == STRATEGIES[0]


def test_an_unknown_strategy_is_refused_with_the_names() -> None:
    with pytest.raises(ValueError, match=r"strategy must be empty or 'default'.*round_robin"):
        DemoSettings(strategy="fastest")
