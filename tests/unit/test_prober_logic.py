"""The prober's pure parts: flap damping, ownership among replicas, slots, HTTP verdicts."""

from __future__ import annotations

import msgspec

from schemas.checks import CheckDefinition
from services.prober.ownership import Replicas
from services.prober.probes import http_status
from services.prober.schedule import Slots, next_slot
from services.prober.thresholds import Damper


def _check(**fields: object) -> CheckDefinition:
    return msgspec.convert(
        {"check_id": "c", "kind": "http", "target": "http://h/", **fields}, CheckDefinition
    )


def test_without_thresholds_every_run_decides() -> None:
    check = _check()
    damper = Damper(check.status)
    assert damper.status == "critical"  # as Consul: critical until a run says otherwise
    assert damper.observe("passing", check) == "passing"
    assert damper.observe("critical", check) == "critical"
    assert damper.observe("warning", check) == "warning"


def test_success_before_passing_needs_that_many_in_a_row() -> None:
    check = _check(success_before_passing=3)
    damper = Damper("critical")
    assert damper.observe("passing", check) == "critical"
    assert damper.observe("passing", check) == "critical"
    assert damper.observe("critical", check) == "critical"  # the count starts again
    assert [damper.observe("passing", check) for _ in range(3)] == [
        "critical",
        "critical",
        "passing",
    ]


def test_failures_before_critical_damps_a_blip() -> None:
    check = _check(failures_before_critical=2)
    damper = Damper("passing")
    assert damper.observe("critical", check) == "passing"
    assert damper.observe("passing", check) == "passing"
    assert damper.observe("critical", check) == "passing"
    assert damper.observe("critical", check) == "critical"


def test_an_initial_status_is_kept_until_a_run() -> None:
    assert Damper(_check(status="passing").status).status == "passing"


def test_each_check_has_exactly_one_owner_and_every_replica_agrees() -> None:
    views = {r: Replicas(r, dead_after_s=3) for r in ("a", "b", "c")}
    for view in views.values():
        for other in views:
            view.heard(other, now=0)
    keys = [f"svc/i{n}/http" for n in range(300)]
    for key in keys:
        owners = {view.owner(key) for view in views.values()}
        assert len(owners) == 1
        assert sum(view.owns(key) for view in views.values()) == 1
    share = {r: sum(views[r].owns(k) for k in keys) for r in views}
    assert all(60 < n < 140 for n in share.values()), share  # spread, not piled on one


def test_a_dead_replica_s_checks_move_and_only_those() -> None:
    a = Replicas("a", dead_after_s=3)
    a.heard("b", now=0)
    a.heard("c", now=0)
    keys = [f"svc/i{n}/tcp" for n in range(300)]
    before = {k: a.owner(k) for k in keys}
    a.heard("b", now=2.5)
    assert a.expire(now=3.5) == ["c"]  # c silent for 3.5 s; b heard 1 s ago
    after = {k: a.owner(k) for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == "c"}
    assert "c" not in after.values()


def test_a_leaving_replica_is_dropped_at_once_and_one_alone_owns_all() -> None:
    a = Replicas("a", dead_after_s=3)
    a.heard("b", now=0)
    assert a.heard("b", now=0.1, leaving=True)
    assert a.live == ["a"]
    assert all(a.owns(f"k{n}") for n in range(50))


def test_slots_are_the_same_everywhere_and_one_interval_apart() -> None:
    first = next_slot("svc/i1/http", 10, after=1000.0)
    assert 1000 < first <= 1010
    assert next_slot("svc/i1/http", 10, after=first) == first + 10
    assert next_slot("svc/i1/http", 10, after=first - 0.001) == first


def test_slots_spread_checks_over_the_interval() -> None:
    phases = [next_slot(f"svc/i{n}/http", 10, after=0) for n in range(1000)]
    buckets = [sum(1 for p in phases if b <= p < b + 1) for b in range(10)]
    assert all(60 < n < 140 for n in buckets), buckets


def test_the_slot_heap_pops_what_is_due_and_skips_stale_entries() -> None:
    slots = Slots()
    slots.add("a", 1, now=0)
    slots.add("b", 1, now=0)
    slots.add("a", 5, now=0)  # rescheduled: the first entry goes stale
    slots.drop("b")
    due = slots.due(now=1.0)
    assert [key for key, _ in due] == ([] if next_slot("a", 5, 0) > 1 else ["a"])
    assert slots.due(now=10.0) == ([("a", next_slot("a", 5, 0))] if not due else [])


def test_consul_http_verdicts() -> None:
    assert http_status(200) == "passing"
    assert http_status(204) == "passing"
    assert http_status(429) == "warning"
    assert http_status(503) == "critical"
    assert http_status(301) == "critical"
