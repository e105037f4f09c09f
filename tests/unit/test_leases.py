"""LeaseTable: monotonic leases, unhealthy at ttl, expired at 2 x ttl, guard, pause credit."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from schemas.registry import Heartbeat, Registration
from services.registry.leases import Lease, LeaseTable, UnknownInstanceError

if TYPE_CHECKING:
    from services.registry.leases import Change

SVC = "orders"
WALL = 1_700_000_000.0  # wall-clock seconds; only displayed, never used for leases


def reg(iid: str, *, ttl: float = 10.0, port: int = 8080, **kw: object) -> Registration:
    return Registration(instance_id=iid, host="10.0.0.1", port=port, ttl_s=ttl, **kw)  # type: ignore[arg-type]


def hb(iid: str, **kw: object) -> Heartbeat:
    return Heartbeat(instance_id=iid, **kw)  # type: ignore[arg-type]


def kinds(changes: list[Change]) -> list[tuple[str, str]]:
    return sorted((c.kind, c.lease.instance_id) for c in changes)


def sweep_until(table: LeaseTable, start: float, end: float, step: float = 1.0) -> list[Change]:
    """Sweep every `step` seconds from `start` to `end` inclusive, as the worker's loop does."""
    out: list[Change] = []
    n = 0
    while start + n * step <= end:
        out.extend(table.sweep(start + n * step))
        n += 1
    return out


# -- the lease --------------------------------------------------------------------------


def test_register_announces_a_new_instance() -> None:
    table = LeaseTable()
    change = table.register(SVC, reg("a", port=9000), 0.0, WALL)
    assert change is not None
    assert change.kind == "registered"
    assert (change.lease.instance_id, change.lease.port, change.lease.healthy) == ("a", 9000, True)
    assert table.get(SVC, "a") is change.lease
    assert table.total == 1


def test_unhealthy_exactly_at_ttl_and_not_before() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a", ttl=10.0), 0.0, WALL)
    assert sweep_until(table, 0.0, 9.0) == []
    assert table.sweep(9.999) == []
    assert kinds(table.sweep(10.0)) == [("unhealthy", "a")]
    lease = table.get(SVC, "a")
    assert lease is not None
    assert not lease.healthy  # still listed, never resolved


def test_expired_at_twice_ttl_and_then_unknown() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a", ttl=10.0), 0.0, WALL)
    assert kinds(sweep_until(table, 0.0, 19.0)) == [("unhealthy", "a")]
    assert table.sweep(19.999) == []
    assert kinds(table.sweep(20.0)) == [("expired", "a")]
    assert table.get(SVC, "a") is None
    assert table.total == 0
    with pytest.raises(UnknownInstanceError):
        table.heartbeat(SVC, hb("a"), 21.0, WALL)


def test_heartbeats_keep_a_lease_alive() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a", ttl=10.0), 0.0, WALL)
    changes = []
    for t in range(1, 101):
        if t % 9 == 0:
            assert table.heartbeat(SVC, hb("a"), float(t), WALL) is None
        changes += table.sweep(float(t))
    assert changes == []


def test_heartbeat_revives_an_unhealthy_lease_and_restarts_its_ttl() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a", ttl=10.0), 0.0, WALL)
    sweep_until(table, 0.0, 12.0)
    change = table.heartbeat(SVC, hb("a"), 12.5, WALL + 12.5)
    assert change is not None
    assert change.kind == "healthy"
    assert change.lease.healthy
    assert change.lease.last_seen == WALL + 12.5
    assert sweep_until(table, 13.0, 22.0) == []
    assert kinds(table.sweep(22.5)) == [("unhealthy", "a")]
    assert kinds(sweep_until(table, 23.0, 32.5, 0.5)) == [("expired", "a")]


def test_heartbeat_records_the_load_it_carries_and_keeps_what_it_omits() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a"), 0.0, WALL)
    table.heartbeat(SVC, hb("a", inflight=7, cpu=0.5, mem=0.25, latency_ms=12.0), 1.0, WALL)
    table.heartbeat(SVC, hb("a", inflight=3), 2.0, WALL)
    lease = table.get(SVC, "a")
    assert lease is not None
    assert (lease.inflight, lease.cpu, lease.mem, lease.latency_ms) == (3, 0.5, 0.25, 12.0)


@pytest.mark.parametrize("service", [SVC, "other"])
def test_heartbeat_for_an_unknown_instance_raises(service: str) -> None:
    table = LeaseTable()
    table.register(SVC, reg("a"), 0.0, WALL)
    with pytest.raises(UnknownInstanceError) as err:
        table.heartbeat(service, hb("ghost" if service == SVC else "a"), 1.0, WALL)
    assert isinstance(err.value, KeyError)


def test_re_register_unchanged_is_no_change_but_refreshes_the_lease() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a", ttl=10.0), 0.0, WALL)
    assert table.register(SVC, reg("a", ttl=10.0), 8.0, WALL) is None
    assert sweep_until(table, 0.0, 17.0) == []
    assert kinds(table.sweep(18.0)) == [("unhealthy", "a")]


def test_re_register_changed_is_updated() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a", port=8080), 0.0, WALL)
    change = table.register(SVC, reg("a", port=9090, metadata={"tier": "gold"}), 1.0, WALL)
    assert change is not None
    assert change.kind == "updated"
    assert (change.lease.port, change.lease.metadata) == (9090, {"tier": "gold"})


def test_re_register_with_a_shorter_ttl_takes_effect_at_once() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a", ttl=30.0), 0.0, WALL)
    assert table.register(SVC, reg("a", ttl=5.0), 1.0, WALL) is not None
    assert sweep_until(table, 0.0, 5.0) == []
    assert kinds(table.sweep(6.0)) == [("unhealthy", "a")]


def test_re_register_of_an_unhealthy_lease_revives_it() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a"), 0.0, WALL)
    sweep_until(table, 0.0, 11.0)
    change = table.register(SVC, reg("a"), 11.5, WALL)
    assert change is not None
    assert change.kind == "healthy"
    assert change.lease.healthy


@pytest.mark.parametrize(("ttl", "port"), [(5.0, 8080), (10.0, 9090)])
def test_a_lease_revived_by_a_changed_registration_turns_unhealthy_after_one_ttl(
    ttl: float, port: int
) -> None:
    table = LeaseTable()
    table.register(SVC, reg("a", ttl=10.0, port=8080), 0.0, WALL)
    sweep_until(table, 0.0, 11.0)
    change = table.register(SVC, reg("a", ttl=ttl, port=port), 11.0, WALL)
    assert change is not None
    assert change.kind == "updated"
    assert change.lease.healthy
    # silent again from 11: unhealthy at 11 + ttl, not only at 11 + 2 x ttl
    assert sweep_until(table, 12.0, 11.0 + ttl - 1.0) == []
    assert kinds(table.sweep(11.0 + ttl)) == [("unhealthy", "a")]
    assert kinds(sweep_until(table, 12.0 + ttl, 11.0 + 2 * ttl)) == [("expired", "a")]


def test_deregister_twice_is_not_an_error() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a"), 0.0, WALL)
    first = table.deregister(SVC, "a")
    assert first is not None
    assert first.kind == "deregistered"
    assert table.deregister(SVC, "a") is None
    assert table.deregister("never", "a") is None
    assert table.total == 0
    assert SVC not in table.services
    assert sweep_until(table, 0.0, 30.0) == []  # its old deadline announces nothing


def test_registering_again_after_deregistering_starts_a_fresh_lease() -> None:
    table = LeaseTable()
    table.register(SVC, reg("a", ttl=10.0), 0.0, WALL)
    table.sweep(0.0)
    table.deregister(SVC, "a")
    change = table.register(SVC, reg("a", ttl=10.0), 8.0, WALL)
    assert change is not None
    assert change.kind == "registered"
    assert sweep_until(table, 1.0, 17.0) == []  # not at the first lease's deadline, 10
    assert kinds(table.sweep(18.0)) == [("unhealthy", "a")]


def test_remove_service_deregisters_all_its_instances_only() -> None:
    table = LeaseTable()
    for iid in "abc":
        table.register(SVC, reg(iid), 0.0, WALL)
    table.register("other", reg("a"), 0.0, WALL)
    assert kinds(table.remove_service(SVC)) == [
        ("deregistered", "a"),
        ("deregistered", "b"),
        ("deregistered", "c"),
    ]
    assert table.leases(SVC) == []
    assert [lease.instance_id for lease in table.leases("other")] == ["a"]
    assert table.total == 1


def test_next_due_is_the_earliest_deadline() -> None:
    table = LeaseTable()
    assert table.next_due() is None
    table.register(SVC, reg("a", ttl=10.0), 0.0, WALL)
    table.register(SVC, reg("b", ttl=3.0), 1.0, WALL)
    assert table.next_due() == 4.0


# -- the expiry guard -------------------------------------------------------------------


def guarded_fleet() -> LeaseTable:
    """Ten instances, six of them (60 %) silent from t=0; the other four heartbeat."""
    table = LeaseTable(guard_min=10, guard_ratio=0.5)
    for n in range(10):
        table.register(SVC, reg(f"i{n}", ttl=10.0), 0.0, WALL)
    return table


def run_fleet(table: LeaseTable, start: int, end: int, alive: list[str]) -> list[Change]:
    out = []
    for t in range(start, end + 1):
        beats = [table.heartbeat(SVC, hb(iid), float(t), WALL) for iid in alive]
        out += [change for change in beats if change is not None]
        out += table.sweep(float(t))
    return out


ALIVE = ["i0", "i1", "i2", "i3"]
SILENT = ["i4", "i5", "i6", "i7", "i8", "i9"]


def test_guard_holds_expiry_while_most_instances_are_silent() -> None:
    table = guarded_fleet()
    changes = run_fleet(table, 0, 60, ALIVE)
    assert kinds(changes) == [("unhealthy", iid) for iid in SILENT]
    assert table.guarding
    assert table.held == 6
    for iid in SILENT:
        lease = table.get(SVC, iid)
        assert lease is not None
        assert not lease.healthy


def test_guard_lifts_and_expiry_resumes_once_enough_come_back() -> None:
    table = guarded_fleet()
    run_fleet(table, 0, 40, ALIVE)
    changes = run_fleet(table, 41, 45, [*ALIVE, "i4"])  # 5 of 10 silent: not a majority
    assert ("healthy", "i4") in kinds(changes)
    assert sorted(iid for kind, iid in kinds(changes) if kind == "expired") == SILENT[1:]
    assert not table.guarding
    assert table.total == 5


def test_guard_lifts_once_silent_ones_are_deregistered() -> None:
    table = guarded_fleet()
    run_fleet(table, 0, 30, ALIVE)
    table.deregister(SVC, "i4")  # 9 left: below guard_min
    changes = run_fleet(table, 31, 33, ALIVE)
    assert kinds(changes) == [("expired", iid) for iid in SILENT[1:]]
    assert not table.guarding


def test_no_guard_below_guard_min() -> None:
    table = LeaseTable(guard_min=10)
    for n in range(9):
        table.register(SVC, reg(f"i{n}", ttl=10.0), 0.0, WALL)
    changes = run_fleet(table, 0, 20, ["i0"])
    assert sorted(iid for kind, iid in kinds(changes) if kind == "expired") == [
        f"i{n}" for n in range(1, 9)
    ]


def test_no_guard_when_only_a_minority_is_silent() -> None:
    table = LeaseTable(guard_min=10)
    for n in range(10):
        table.register(SVC, reg(f"i{n}", ttl=10.0), 0.0, WALL)
    changes = run_fleet(table, 0, 20, [f"i{n}" for n in range(5)])  # exactly half silent
    assert sorted(iid for kind, iid in kinds(changes) if kind == "expired") == [
        f"i{n}" for n in range(5, 10)
    ]
    assert not table.guarding


# -- pause credit -----------------------------------------------------------------------


def test_a_pause_of_the_registry_is_not_blamed_on_the_fleet() -> None:
    table = LeaseTable(pause_s=2.0)
    table.register(SVC, reg("a", ttl=10.0), 0.0, WALL)
    table.sweep(0.0)
    assert table.sweep(100.0) == []  # the registry was stopped for 100 s
    lease = table.get(SVC, "a")
    assert lease is not None
    assert lease.healthy
    # the lease runs on from where it was: 10 s of silence after the pause
    assert sweep_until(table, 101.0, 109.0) == []
    assert kinds(table.sweep(110.0)) == [("unhealthy", "a")]
    assert kinds(sweep_until(table, 111.0, 120.0)) == [("expired", "a")]


def test_gaps_up_to_pause_s_are_not_credited() -> None:
    table = LeaseTable(pause_s=2.0)
    table.register(SVC, reg("a", ttl=10.0), 0.0, WALL)
    changes = sweep_until(table, 0.0, 10.0, 2.0)  # every gap exactly pause_s
    assert kinds(changes) == [("unhealthy", "a")]


def test_pause_credit_never_moves_a_lease_past_now() -> None:
    # After a pause, heartbeats queued during it may be handled before the first sweep.
    # They are fresh already; crediting them the pause again would keep a dead instance
    # listed healthy for the length of the pause.
    table = LeaseTable(pause_s=2.0)
    table.register(SVC, reg("fresh", ttl=10.0), 0.0, WALL)
    table.register(SVC, reg("stale", ttl=10.0), 0.0, WALL)
    table.sweep(0.0)
    table.heartbeat(SVC, hb("fresh"), 30.0, WALL)
    assert table.sweep(30.0) == []
    assert sweep_until(table, 31.0, 39.0) == []
    assert kinds(table.sweep(40.0)) == [("unhealthy", "fresh"), ("unhealthy", "stale")]


# -- at scale ---------------------------------------------------------------------------


def test_a_sweep_touches_only_leases_that_are_due(monkeypatch: pytest.MonkeyPatch) -> None:
    table = LeaseTable()
    n = 100_000
    for k in range(n):
        table.register(SVC, reg(f"i{k}", ttl=10.0), k / n, WALL)  # registered over 1 s
    calls = 0
    due = Lease.due

    def counting_due(self: Lease) -> float:
        nonlocal calls
        calls += 1
        return due(self)

    monkeypatch.setattr(Lease, "due", counting_due)
    for t in (5.0, 6.0, 7.0, 8.0, 9.0, 9.999):
        assert table.sweep(t) == []
    assert calls == 0  # nothing was due: no lease looked at

    changes = table.sweep(10.25)  # those registered in the first quarter second
    assert len(changes) == n // 4 + 1
    assert {c.kind for c in changes} == {"unhealthy"}
    assert calls <= 2 * len(changes)
    assert table.unhealthy == len(changes)
    assert len(table._heap) == n  # one entry per lease, none piling up


# -- against a model --------------------------------------------------------------------


def test_random_traffic_matches_a_model_of_the_contract() -> None:
    """Unhealthy once silent ttl, gone once silent 2 x ttl, whatever the order of events."""
    rng = random.Random(17)
    table = LeaseTable(guard_ratio=0.0, pause_s=1e9)
    model: dict[str, tuple[float, float]] = {}  # id -> (last seen, ttl)
    ids = [f"i{n}" for n in range(15)]
    for step in range(1, 1600):
        t = step * 0.25
        for _ in range(rng.randint(0, 3)):
            at = t - 0.125  # events between sweeps; multiples of 1/8 add up exactly
            iid = rng.choice(ids)
            r = rng.random()
            if r < 0.25:
                ttl = float(rng.choice((1, 2, 3)))
                table.register(SVC, reg(iid, ttl=ttl, port=rng.choice((1, 2))), at, WALL)
                model[iid] = (at, ttl)
            elif r < 0.9:
                if iid in model:
                    table.heartbeat(SVC, hb(iid), at, WALL)
                    model[iid] = (at, model[iid][1])
                else:
                    with pytest.raises(UnknownInstanceError):
                        table.heartbeat(SVC, hb(iid), at, WALL)
            else:
                assert (table.deregister(SVC, iid) is not None) == (iid in model)
                model.pop(iid, None)
        table.sweep(t)
        model = {i: (s, ttl) for i, (s, ttl) in model.items() if t - s < 2 * ttl}
        listed = {lease.instance_id: lease.healthy for lease in table.leases(SVC)}
        expected = {i: t - s < ttl for i, (s, ttl) in model.items()}
        assert listed == expected, t
        assert table.total == len(expected)
        assert table.unhealthy == sum(not h for h in expected.values())


def test_instances_with_equal_metadata_stay_independent() -> None:
    # The table shares equal metadata dicts and ttls between leases to save memory; one
    # instance re-registering must never change what another one shows.
    table = LeaseTable()
    table.register(SVC, reg("a", metadata={"tier": "gold"}, ttl=15.0), 0.0, WALL)
    table.register(SVC, reg("b", metadata={"tier": "gold"}, ttl=15.0, port=15), 0.0, WALL)
    table.register(SVC, reg("a", metadata={"tier": "silver"}, ttl=15.0), 1.0, WALL)
    a, b = table.get(SVC, "a"), table.get(SVC, "b")
    assert a is not None
    assert b is not None
    assert (a.metadata, b.metadata) == ({"tier": "silver"}, {"tier": "gold"})
    assert type(b.ttl) is float
    assert b.ttl == 15.0  # a port of 15 is not a ttl of 15.0
