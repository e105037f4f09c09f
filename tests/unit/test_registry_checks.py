"""The registry's side of active checks: statuses per check, health, leases they keep."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from schemas.checks import CheckDefinition, CheckResult
from schemas.registry import Registration
from services.registry.checks import CheckTable, needs_heartbeats
from services.registry.leases import LeaseTable

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _check(check_id: str, kind: str = "http", **fields: object) -> CheckDefinition:
    return msgspec.convert(
        {"check_id": check_id, "kind": kind, "target": "http://h/", **fields}, CheckDefinition
    )


def _result(check_id: str, status: str, output: str = "") -> CheckResult:
    return msgspec.convert(
        {"instance_id": "i", "check_id": check_id, "status": status, "output": output, "at": AT},
        CheckResult,
    )


def test_health_is_the_worst_check_and_starts_at_the_initial_status() -> None:
    table = CheckTable()
    table.define("s", "i", [_check("a"), _check("b", status="passing")], mono=0)
    assert table.health("s", "i") == "critical"  # a: critical until a result
    assert table.record("s", _result("a", "passing", "200 OK"), mono=1)
    assert table.health("s", "i") == "passing"
    assert table.record("s", _result("b", "warning"), mono=2)
    assert table.health("s", "i") == "warning"
    assert not table.record("s", _result("b", "warning", "again"), mono=3)  # no transition
    states = {s.check_id: s for s in table.states("s", "i")}
    assert (states["a"].status, states["a"].output) == ("passing", "200 OK")
    assert states["b"].output == "again"  # the newest output is kept


def test_results_for_unknown_checks_change_nothing() -> None:
    table = CheckTable()
    assert not table.record("s", _result("a", "passing"), mono=0)
    table.define("s", "i", [_check("a")], mono=0)
    assert not table.record("s", _result("zzz", "passing"), mono=0)
    assert table.health("nope", "i") == "passing"  # no checks: nothing to say


def test_redefining_keeps_statuses_and_drops_removed_checks() -> None:
    table = CheckTable()
    table.define("s", "i", [_check("a"), _check("b")], mono=0)
    table.record("s", _result("a", "passing"), mono=1)
    table.define("s", "i", [_check("a", interval_s=5)], mono=2)
    assert [s.check_id for s in table.states("s", "i")] == ["a"]
    assert table.health("s", "i") == "passing"


def test_critical_for_deregister_critical_after_is_overdue() -> None:
    table = CheckTable()
    table.define("s", "i", [_check("a", deregister_critical_after_s=60)], mono=0)
    assert table.overdue(59) == []
    assert table.overdue(60) == [("s", "i")]
    table.record("s", _result("a", "passing"), mono=61)
    assert table.overdue(1000) == []
    table.record("s", _result("a", "critical"), mono=1000)
    assert table.overdue(1059) == []
    assert table.overdue(1060) == [("s", "i")]


def test_an_instance_with_probed_checks_and_no_ttl_needs_no_heartbeats() -> None:
    assert needs_heartbeats([])
    assert needs_heartbeats([_check("a"), _check("t", kind="ttl")])
    assert not needs_heartbeats([_check("a")])
    leases = LeaseTable()
    checked = Registration(instance_id="ext", host="h", port=1, checks=[_check("a")])
    plain = Registration(instance_id="sdk", host="h", port=2, ttl_s=1)
    leases.register("s", checked, mono=0, wall=0)
    leases.register("s", plain, mono=0, wall=0)
    changes = [c for mono in (1.5, 2.5, 3.5, 4.5) for c in leases.sweep(mono)]
    assert [(c.kind, c.lease.instance_id) for c in changes] == [
        ("unhealthy", "sdk"),
        ("expired", "sdk"),
    ]
    assert leases.get("s", "ext") is not None  # silent all along, kept by its check
