"""The strategy traits table (schemas/balancer.py STRATEGY_TRAITS) against the pickers.

Each trait is a claim about what a strategy reads; each test changes that one input and
checks that exactly the strategies claiming it pick differently, so the table cannot
drift from the code that the pools, the pickers and the DNS answers build on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from builders import instance, pick, pool_of

from schemas.balancer import STRATEGIES, STRATEGY_TRAITS
from services.errors import BadRequest

if TYPE_CHECKING:
    from collections.abc import Callable

    from schemas.registry import Instance
    from services.balancer.pool import Pool

PICKS = 30


def picks(pool: Pool, strategy: str) -> list[str]:
    """PICKS picks, each with its own key (keyed strategies need one)."""
    return [pick(pool, strategy, key=f"k{n}").member.id for n in range(PICKS)]


def differs(
    strategy: str,
    instances: Callable[[], list[Instance]],
    changed: Callable[[], list[Instance]] | None = None,
    tweak: Callable[[Pool], None] | None = None,
) -> bool:
    """Do two pools with the same seed pick differently, one changed or tweaked?"""
    same = pool_of(*instances(), strategy=strategy)
    other = pool_of(*(changed or instances)(), strategy=strategy)
    if tweak is not None:
        tweak(other)
    return picks(same, strategy) != picks(other, strategy)


def three(**a: object) -> list[Instance]:
    return [instance("a", **a), instance("b"), instance("c")]  # type: ignore[arg-type]


def test_the_table_names_every_strategy_of_the_contract_once() -> None:
    assert tuple(STRATEGY_TRAITS) == STRATEGIES
    assert len(set(STRATEGIES)) == len(STRATEGIES)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_keyed_strategies_and_only_they_need_a_key(strategy: str) -> None:
    pool = pool_of(*three(), strategy=strategy)
    if STRATEGY_TRAITS[strategy].keyed:
        with pytest.raises(BadRequest, match="needs a `key`"):
            pick(pool, strategy)
    else:
        assert pick(pool, strategy).member.id in {"a", "b", "c"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_load_moves_exactly_the_strategies_that_use_load(strategy: str) -> None:
    def busy(pool: Pool) -> None:  # the least and the most loaded are neither the first
        pool.members["a"].heartbeat(3, 0.0)
        pool.members["b"].heartbeat(5, 0.0)

    assert differs(strategy, three, tweak=busy) is STRATEGY_TRAITS[strategy].load


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_latency_moves_exactly_the_strategies_that_use_latency(strategy: str) -> None:
    def slow(pool: Pool) -> None:
        pool.members["a"].observe(500.0, 100.0)

    assert differs(strategy, three, tweak=slow) is STRATEGY_TRAITS[strategy].latency


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_weights_move_exactly_the_strategies_that_use_weights(strategy: str) -> None:
    moved = differs(strategy, three, lambda: three(weight=1000))
    assert moved is STRATEGY_TRAITS[strategy].weights


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_capacity_moves_exactly_the_strategies_that_respect_it(strategy: str) -> None:
    def one_busy(pool: Pool) -> None:
        pool.members["a"].heartbeat(1, 0.0)

    def full() -> list[Instance]:
        return three(metadata={"max_inflight": "1"})

    same = pool_of(*three(), strategy=strategy)
    other = pool_of(*full(), strategy=strategy)
    one_busy(same)
    one_busy(other)
    assert (picks(same, strategy) != picks(other, strategy)) is STRATEGY_TRAITS[strategy].capacity
