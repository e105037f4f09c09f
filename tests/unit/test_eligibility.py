"""The one rule of who may take traffic, and the readers that apply it agreeing with it.

services/view/eligibility.py is asked by the balancer's candidate sets and members and by
the gateway's view; here the rule itself, then each reader against it over every mix of
marks.
"""

from __future__ import annotations

import itertools

import pytest
from builders import instance, pool_of

from schemas.governor import ServiceConfig
from services.balancer.members import Member
from services.view import ServiceState
from services.view.eligibility import may_take_traffic

# healthy, drained, weight, ejected, panic
MARKS = list(
    itertools.product((True, False), (True, False), (0, 1, 100), (True, False), (True, False))
)


def test_a_healthy_undrained_weighted_instance_takes_traffic() -> None:
    assert may_take_traffic(healthy=True, drained=False, weight=100)
    assert may_take_traffic(healthy=True, drained=False, weight=1)


@pytest.mark.parametrize(
    ("healthy", "drained", "weight", "ejected"),
    [
        (False, False, 100, False),  # unhealthy
        (True, True, 100, False),  # drained by an operator
        (True, False, 0, False),  # weight 0
        (True, False, 100, True),  # ejected as an outlier
    ],
)
def test_each_mark_alone_keeps_it_out(
    healthy: bool, drained: bool, weight: int, ejected: bool
) -> None:
    assert not may_take_traffic(healthy=healthy, drained=drained, weight=weight, ejected=ejected)


def test_panic_brings_back_the_unhealthy_only() -> None:
    # not the drained, the weight 0 nor the ejected
    assert may_take_traffic(healthy=False, drained=False, weight=100, panic=True)
    assert not may_take_traffic(healthy=False, drained=True, weight=100, panic=True)
    assert not may_take_traffic(healthy=False, drained=False, weight=0, panic=True)
    assert not may_take_traffic(healthy=True, drained=False, weight=100, ejected=True, panic=True)


@pytest.mark.parametrize(("healthy", "drained", "weight", "ejected", "panic"), MARKS)
def test_the_pool_and_its_members_apply_the_rule(
    healthy: bool, drained: bool, weight: int, ejected: bool, panic: bool
) -> None:
    inst = instance("a", healthy=healthy, drained=drained, weight=weight)
    pool = pool_of(inst)
    pool.set_ejected(frozenset({"a"} if ejected else ()), held=False)
    expected = may_take_traffic(
        healthy=healthy, drained=drained, weight=weight, ejected=ejected, panic=panic
    )
    assert [m.id for m in pool.candidates("", panic=panic)] == (["a"] if expected else [])
    member = Member(inst)
    member.ejected = ejected
    assert member.eligible is may_take_traffic(
        healthy=healthy, drained=drained, weight=weight, ejected=ejected
    )


@pytest.mark.parametrize(("healthy", "drained", "weight", "ejected", "panic"), MARKS)
def test_the_gateway_view_applies_the_rule(
    healthy: bool, drained: bool, weight: int, ejected: bool, panic: bool
) -> None:
    # a threshold of 1 panics whenever any instance is unhealthy; 0 never does
    config = ServiceConfig(service="orders", protect_threshold=1.0 if panic else 0.0)
    state = ServiceState("orders", config, 1)
    state.instances["a"] = instance("a", healthy=healthy, drained=drained, weight=weight)
    state.ejected = frozenset({"a"} if ejected else ())
    serving, in_panic = state.serving()
    expected = may_take_traffic(
        healthy=healthy, drained=drained, weight=weight, ejected=ejected, panic=in_panic
    )
    assert [i.instance_id for i in serving] == (["a"] if expected else [])
