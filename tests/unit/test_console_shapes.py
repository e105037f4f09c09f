"""What the console shows of an instance and a service, and the diff of two revisions."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.balancer import DEFAULT_STRATEGY, Ejection, OutlierState
from schemas.governor import ConfigApplied, InstanceOverride, ServiceConfig
from schemas.registry import Instance
from services.gateway.console.shapes import diff, history_rows, matches, service_row, state_of
from services.view import ServiceState

NOW = 1_800_000_000.0
AT = datetime.fromtimestamp(NOW - 100, UTC)


def _instance(instance_id: str, **fields: object) -> Instance:
    values: dict[str, object] = {
        "instance_id": instance_id,
        "host": "10.0.0.1",
        "port": 80,
        "weight": 100,
        "zone": "z1",
        "version": "1",
        "metadata": {},
        "healthy": True,
        "drained": False,
        "inflight": 0,
        "registered_at": AT,
        "last_seen": AT,
        "ttl_s": 15.0,
        **fields,
    }
    return Instance(**values)  # type: ignore[arg-type]


def _service(*instances: Instance, config: ServiceConfig | None = None) -> ServiceState:
    state = ServiceState("web", config or ServiceConfig(service="web"), 1)
    state.instances = {i.instance_id: i for i in instances}
    return state


def test_each_state_says_why() -> None:
    config = ServiceConfig(
        service="web", revision=4, instances={"b": InstanceOverride(drained=True)}
    )
    state = _service(
        _instance("a"),
        _instance("b", drained=True),
        _instance("c", healthy=False),
        _instance("d"),
        config=config,
    )
    state.ejected = frozenset({"d"})
    ejection = Ejection(since=NOW - 5, until=NOW + 25, reason="5 failures in a row", times=2)
    state.outliers = OutlierState(ejected={"d": ejection})
    said = {i: state_of(state, state.instances[i], NOW) for i in "abcd"}
    assert said["a"] == ("passing", "healthy and serving")
    assert said["b"] == ("drained", "drained by config revision 4: it takes no new traffic")
    assert said["c"] == ("critical", "unhealthy: no heartbeat for 100 s (its TTL is 15 s)")
    assert said["d"][0] == "ejected"
    assert (
        "until 2027-01-15T08:00:25+00:00 (5 failures in a row; ejection 2 in a row)"
        in (said["d"][1])
    )
    row = service_row(state, NOW)
    assert row["counts"] == {"passing": 1, "critical": 1, "drained": 1, "ejected": 1}
    assert (row["instances"], row["revision"]) == (4, 4)


def test_filters_by_name_tag_zone_and_state() -> None:
    state = _service(_instance("a", zone="z2", metadata={"team": "pay"}), _instance("b"))
    assert matches(state, NOW, name="we")
    assert not matches(state, NOW, name="api")
    assert matches(state, NOW, zone="z2")
    assert not matches(state, NOW, zone="z3")
    assert matches(state, NOW, tag="team")
    assert matches(state, NOW, tag="team=pay")
    assert not matches(state, NOW, tag="team=web")
    assert matches(state, NOW, state="passing")
    assert not matches(state, NOW, state="critical")
    assert not matches(state, NOW, zone="z2", tag="team=web")  # both hold for one instance


def test_history_is_newest_first_with_what_each_revision_changed() -> None:
    def entry(revision: int, strategy: str, **kw: object) -> ConfigApplied:
        config = ServiceConfig(service="web", revision=revision, strategy=strategy, **kw)  # type: ignore[arg-type]
        return ConfigApplied(
            service="web", revision=revision, config=config, actor="ann", reason="r", at=AT
        )

    rows = history_rows(
        [entry(2, "random", instances={"a": InstanceOverride(weight=5)}), entry(1, "round_robin")]
    )
    assert [r["revision"] for r in rows] == [2, 1]
    assert rows[0]["changes"] == [
        {"setting": "instances.a.weight", "before": None, "after": 5},
        {"setting": "strategy", "before": "round_robin", "after": "random"},
    ]
    assert rows[1]["changes"] == [  # the first one against the defaults
        {"setting": "strategy", "before": DEFAULT_STRATEGY, "after": "round_robin"}
    ]
    assert diff({"a": 1}, {"a": 1}) == []
