"""Every Grafana panel, annotation and variable query of grafana/, run against a real InfluxDB.

Grafana itself is not needed: its InfluxQL macros are substituted here the way Grafana does
(`$timeFilter`, `$__interval`, `$__interval_ms`, and multi-value variables as `(a|b)`), and
the query goes to influxd's /query as Grafana's backend sends it. The fleet's points are
built with the collector's own line-protocol builders, so a panel that reads a field or a
tag the collector does not write fails here.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from influxserver import InfluxServer, influxd_binary

from schemas.balancer import CallReport, OutlierEvent, PickCount, PickCounts
from schemas.checks import CheckResult, CheckStatus
from schemas.governor import ChangeKind, ConfigApplied, InstanceOverride, ServiceConfig
from schemas.registry import EventKind, Heartbeat, Instance, InstanceEvent
from services.collector import points

if TYPE_CHECKING:
    from collections.abc import Iterator

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE_UID = "baton-influx"
S = 1_000_000_000  # nanoseconds per second

# -- Grafana's macros -------------------------------------------------------------------
INTERVAL, INTERVAL_MS = "10s", "10000"
RANGE_S = 15 * 60
# What Grafana puts in a variable: a custom "All" is sent as is; several values become
# `(a|b)`; one value of a multi-value variable is sent bare (regex-escaped, and our names
# have no regex characters).
SCENARIOS: dict[str, dict[str, str]] = {
    "all": {"service": ".*", "instance": ".*", "strategy": ".*"},
    "several": {
        "service": "(orders|payments)",
        "instance": "(orders-1|orders-2|payments-1)",
        "strategy": "(round_robin|weighted)",
    },
    "one": {"service": "orders", "instance": "orders-1", "strategy": "weighted"},
}
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def time_filter(form: str) -> str:
    """`relative`: Grafana's browser-side form; `absolute`: its backend's (Grafana 10+)."""
    if form == "relative":
        return "time >= now() - 15m and time <= now()"
    to_ms = time.time_ns() // 1_000_000
    return f"time >= {to_ms - RANGE_S * 1000}ms and time <= {to_ms}ms"


def render(query: str, variables: dict[str, str], form: str = "relative") -> str:
    """The query as Grafana sends it to InfluxDB; an unknown `$name` fails the test."""
    macros = {
        "timeFilter": time_filter(form),
        "__interval_ms": INTERVAL_MS,
        "__interval": INTERVAL,
        "interval": INTERVAL,
        **variables,
    }

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in macros:
            pytest.fail(f"unknown variable ${name} in {query}")
        return macros[name]

    return _VARIABLE.sub(one, query)


# -- what the dashboards hold -------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    dashboard: str  # file stem
    kind: str  # panel, annotation, variable
    title: str
    ref: str
    query: str
    result_format: str = "time_series"

    @property
    def id(self) -> str:
        return f"{self.dashboard}: {self.kind} {self.title!r} [{self.ref}]"


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    found = []
    for panel in board.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(board) if p.get("type") != "row"]


def queries_of(path: Path) -> list[Query]:
    try:
        board = load(path)
    except json.JSONDecodeError:
        return []  # test_every_dashboard_is_valid names it
    name = path.stem
    found = [
        Query(name, "panel", p["title"], t["refId"], t["query"], t.get("resultFormat", ""))
        for p in data_panels(board)
        for t in p.get("targets", [])
    ]
    found += [
        Query(name, "annotation", a["name"], "query", a["query"])
        for a in board.get("annotations", {}).get("list", [])
        if not a.get("builtIn")
    ]
    found += [
        Query(name, "variable", v["name"], "query", v["query"])
        for v in board.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    ]
    return found


ALL_QUERIES = [q for path in DASHBOARDS for q in queries_of(path)]


# -- the fleet, as the collector would write it ---------------------------------------------
@dataclass
class Fleet:
    """What was written, so panels can be checked against it."""

    calls: dict[str, tuple[int, int]]  # instance -> (calls, errors)
    picks: dict[tuple[str, str], int]  # (instance, strategy) -> picks
    weights: dict[str, int]  # instance -> last weight
    lines: list[str]


SERVICE_OF = {"orders-1": "orders", "orders-2": "orders", "payments-1": "payments"}
# orders-2 is slow, fails one call in ten, then stops heartbeating 2 minutes ago.
LATENCIES = {
    "orders-1": [20.0 + i for i in range(10)],
    "orders-2": [600.0 + 10 * i for i in range(10)],
    "payments-1": [10.0 * (i + 1) for i in range(10)],
}
FAILED_CALL = {"orders-2": 4, "payments-1": 7}
INFLIGHT = {"orders-1": 3, "orders-2": 7, "payments-1": 2}
DIED_S = 120  # orders-2's last heartbeat, seconds ago


def _instance(iid: str, at: datetime, *, healthy: bool = True) -> Instance:
    return Instance(
        instance_id=iid,
        host="10.0.0.5",
        port=8080,
        weight=100,
        zone="eu-1",
        version="1.2.0",
        metadata={},
        healthy=healthy,
        drained=False,
        inflight=0,
        registered_at=at,
        last_seen=at,
    )


def _applied(
    service: str,
    revision: int,
    actor: str,
    reason: str,
    strategy: str,
    kind: ChangeKind = "change",
    **kw: Any,
) -> ConfigApplied:
    config = ServiceConfig(service=service, revision=revision, strategy=strategy, **kw)
    return ConfigApplied(
        service=service,
        revision=revision,
        config=config,
        actor=actor,
        reason=reason,
        at=datetime.now(UTC),  # the collector stamps the point when the message arrives
        kind=kind,
    )


class Timeline:
    """Timestamps relative to one `now`, in nanoseconds, as the collector writes them."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def ago(self, seconds: float) -> int:
        return self.now_ns - int(seconds * S)

    @staticmethod
    def when(ts: int) -> datetime:
        return datetime.fromtimestamp(ts / S, UTC)


def heartbeats(clock: Timeline) -> list[str]:
    """Every 5 s for 5 minutes; orders-2 goes silent DIED_S ago."""
    lines = []
    for k in range(60):
        ts = clock.ago(300 - 5 * k)
        for n, (iid, service) in enumerate(SERVICE_OF.items()):
            if iid == "orders-2" and ts > clock.ago(DIED_S):
                continue
            hb = Heartbeat(
                instance_id=iid, inflight=INFLIGHT[iid], cpu=0.4, mem=0.3, latency_ms=15.0
            )
            line = points.load(service, hb, "eu-1", ts + n)
            assert line is not None
            lines.append(line)
    return lines


def calls(clock: Timeline) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Ten calls per instance, spread over the minutes it was up."""
    lines, written = [], {}
    for iid, latencies in LATENCIES.items():
        start, step = (290, 15) if iid == "orders-2" else (280, 25)
        for i, latency in enumerate(latencies):
            report = CallReport(instance_id=iid, latency_ms=latency, ok=FAILED_CALL.get(iid) != i)
            lines.append(points.call(SERVICE_OF[iid], report, "eu-1", clock.ago(start - step * i)))
        written[iid] = (len(latencies), int(iid in FAILED_CALL))
    return lines, written


WEIGHTS = {"orders-1": 300, "orders-2": 100, "payments-1": 100}


def picks(clock: Timeline) -> tuple[list[str], dict[tuple[str, str], int]]:
    """Every 10 s: orders weighted 3:1 until bob switches it to round_robin 200 s ago, and
    nothing for orders-2 once it died; payments stays weighted."""
    lines: list[str] = []
    counted: dict[tuple[str, str], int] = {}
    for k in range(30):
        seconds = 300 - 10 * k
        strategy = "weighted" if seconds > 200 else "round_robin"
        alive = ["orders-1"] if seconds <= DIED_S else ["orders-1", "orders-2"]
        share = {"orders-1": 3, "orders-2": 1} if strategy == "weighted" else {}
        orders = [
            PickCount(
                instance_id=iid, strategy=strategy, count=share.get(iid, 2), weight=WEIGHTS[iid]
            )
            for iid in alive
        ]
        payments = [PickCount(instance_id="payments-1", strategy="weighted", count=5, weight=100)]
        for service, counts in (("orders", orders), ("payments", payments)):
            msg = PickCounts(service=service, node="b1", interval_s=10.0, picks=counts)
            lines += points.picks(msg, clock.ago(seconds))
            for p in counts:
                key = (p.instance_id, p.strategy)
                counted[key] = counted.get(key, 0) + p.count
    return lines, counted


def registry_events(clock: Timeline) -> list[str]:
    """All three register; orders-2 turns unhealthy after its ttl, then expires."""
    said: list[tuple[EventKind, str, int]] = [
        ("registered", "orders-1", 300),
        ("registered", "orders-2", 299),
        ("registered", "payments-1", 298),
        ("unhealthy", "orders-2", DIED_S - 15),
        ("expired", "orders-2", DIED_S - 30),
    ]
    lines = []
    for kind, iid, seconds in said:
        ts = clock.ago(seconds)
        inst = _instance(iid, clock.when(ts), healthy=kind == "registered")
        event = InstanceEvent(kind=kind, service=SERVICE_OF[iid], instance=inst, at=clock.when(ts))
        lines.append(points.registry_event(event, ts))
    return lines


def config_changes(clock: Timeline) -> list[str]:
    """ann weights orders, bob switches it to round_robin, carol rolls payments back."""
    weights = {"orders-1": InstanceOverride(weight=300)}
    changes = [
        (290, _applied("orders", 1, "ann", "initial weights", "weighted", instances=weights)),
        (250, _applied("payments", 1, "ann", "protect", "weighted", protect_threshold=0.3)),
        (200, _applied("orders", 2, "bob", "even out", "round_robin", instances=weights)),
        (60, _applied("payments", 2, "carol", "threshold too high", "weighted", "rollback")),
    ]
    return [points.config_change(c, clock.ago(seconds)) for seconds, c in changes]


def outlier_events(clock: Timeline) -> list[str]:
    """The balancer ejects orders-2 (failing) 250 s ago for 30 s, and payments-1 once."""
    said = [
        ("ejected", "orders-2", 250, 1, "consecutive_failures: 5 failed calls in a row"),
        ("returned", "orders-2", 220, 1, "ejection time over"),
        ("ejected", "payments-1", 100, 1, "success_rate: 40.0% of 120 calls, below 88.0%"),
    ]
    lines = []
    for kind, iid, seconds, times, reason in said:
        ts = clock.ago(seconds)
        until = clock.when(ts) + timedelta(seconds=30) if kind == "ejected" else clock.when(ts)
        event = OutlierEvent(
            kind=kind,  # type: ignore[arg-type]  # the two kinds, above
            service=SERVICE_OF[iid],
            instance_id=iid,
            until=until,
            reason=reason,
            at=clock.when(ts),
            ejections=times,
            ejected=1 if kind == "ejected" else 0,
            node="b1",
        )
        lines.append(points.outlier_event(event, ts))
    return lines


def check_results(clock: Timeline) -> list[str]:
    """The prober checks orders-1 over HTTP every 10 s: passing, critical (a 503) from
    120 s ago for three runs, passing again since 90 s ago."""
    lines = []
    previous: CheckStatus | None = None
    for k in range(30):
        seconds = 300 - 10 * k
        status: CheckStatus = "critical" if 120 >= seconds > 90 else "passing"
        code = 503 if status == "critical" else 200
        result = CheckResult(
            instance_id="orders-1",
            check_id="http",
            status=status,
            output=f"HTTP GET http://10.0.0.1/health: {code}",
            at=clock.when(clock.ago(seconds)),
            duration_ms=2.5,
            previous=previous,
            prober="p1",
        )
        lines += points.check_result("orders", result, clock.ago(seconds))
        previous = status
    return lines


def collector_health(clock: Timeline) -> list[str]:
    """Every 10 s, counters since the collector started: 100 points per 10 s, a few
    retries, one rejected point, and 42 points buffered at the end."""
    lines = []
    for k in range(30):
        stats = {
            "received": 100 * k,
            "written": 100 * k,
            "retried": 12 if k >= 15 else 0,
            "dropped": 0,
            "rejected": 1 if k >= 20 else 0,
            "buffered": 42 if k == 29 else 0,
        }
        lines.append(points.collector_health("c0ffee01", stats, clock.ago(300 - 10 * k)))
    return lines


def build_fleet(now_ns: int) -> Fleet:
    clock = Timeline(now_ns)
    call_lines, written_calls = calls(clock)
    pick_lines, counted_picks = picks(clock)
    lines = [
        *heartbeats(clock),
        *call_lines,
        *pick_lines,
        *registry_events(clock),
        *config_changes(clock),
        *outlier_events(clock),
        *check_results(clock),
        *collector_health(clock),
    ]
    return Fleet(calls=written_calls, picks=counted_picks, weights=WEIGHTS, lines=lines)


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310  # our influxd
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310  # our influxd
        return int(reply.status)


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One influxd for the module; the tests that need it skip without it (the JSON and
    provisioning checks run anyway)."""
    if influxd_binary() is None:
        pytest.skip("influxd missing: apt-get install -y influxdb (just test does)")
    server = InfluxServer(tmp_path_factory.mktemp("influx")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fleet(influx: InfluxServer) -> Fleet:
    q = urllib.parse.urlencode({"q": "CREATE DATABASE baton"})
    assert _post(f"{influx.url}/query?{q}", b"") == 200
    built = build_fleet(time.time_ns())
    assert _post(f"{influx.url}/write?db=baton&precision=ns", "\n".join(built.lines).encode())
    return built


# -- running a query as Grafana would ---------------------------------------------------------
Series = list[dict[str, Any]]


def run(influx: InfluxServer, query: str) -> Series:
    """The series of one statement; fails on any error InfluxDB reports."""
    reply: Any = influx.query(query)
    assert "error" not in reply, f"{reply['error']}\n{query}"
    (result,) = reply["results"]
    assert "error" not in result, f"{result['error']}\n{query}"
    series: Series = result.get("series", [])
    return series


def rows(series: Series) -> list[dict[str, Any]]:
    """One dict per row, with the series' tags."""
    return [
        {**s.get("tags", {}), **dict(zip(s["columns"], values, strict=True))}
        for s in series
        for values in s["values"]
    ]


def panel(name: str, title: str) -> dict[str, Any]:
    board = load(GRAFANA / "dashboards" / f"{name}.json")
    found = [p for p in data_panels(board) if p["title"] == title]
    assert len(found) == 1, f"{name}: no single panel titled {title!r}"
    return found[0]


def panel_rows(
    influx: InfluxServer, name: str, title: str, scenario: str = "all", ref: str = "A"
) -> list[dict[str, Any]]:
    (target,) = [t for t in panel(name, title)["targets"] if t["refId"] == ref]
    return rows(run(influx, render(target["query"], SCENARIOS[scenario])))


# -- the tests ----------------------------------------------------------------------------------
def test_the_dashboards_are_there() -> None:
    assert {p.stem for p in DASHBOARDS} == {"fleet-overview", "service", "balancer", "governance"}
    assert len(ALL_QUERIES) > 40


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_dashboard_is_valid(path: Path) -> None:
    board = load(path)  # valid JSON, or this raises
    assert board["uid"].startswith("baton-")
    assert 36 <= board["schemaVersion"] <= 41
    ids = [p["id"] for p in all_panels(board)]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    for p in data_panels(board):
        where = f"{path.stem}: {p['title']!r}"
        assert p["datasource"]["uid"] == DATASOURCE_UID, where
        assert p["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
        assert p.get("description"), f"{where} has no description"
        assert p["title"].endswith(("?", ")")), f"{where}: ask the operator's question"
        for t in p["targets"]:
            assert t["rawQuery"], where
            assert t.get("datasource", {"uid": DATASOURCE_UID})["uid"] == DATASOURCE_UID, where
            assert "$timeFilter" in t["query"] or "now()" in t["query"], where
    for a in board["annotations"]["list"]:
        if a.get("builtIn"):
            continue
        assert a["datasource"]["uid"] == DATASOURCE_UID, a["name"]
        assert a["target"]["query"] == a["query"], f"{a['name']}: target and legacy differ"
        assert "$timeFilter" in a["query"], a["name"]
    for v in board["templating"]["list"]:
        assert v["datasource"]["uid"] == DATASOURCE_UID, v["name"]


def test_provisioning_names_the_datasource_the_dashboards_use() -> None:
    datasource = (GRAFANA / "provisioning" / "datasources" / "baton.yaml").read_text()
    for line in ("uid: baton-influx", "url: ${INFLUX_URL}", "version: InfluxQL", "dbName: baton"):
        assert re.search(rf"^\s+{re.escape(line)}\s*$", datasource, re.MULTILINE), line
    provider = (GRAFANA / "provisioning" / "dashboards" / "baton.yaml").read_text()
    assert re.search(r"^\s+folder: Baton\s*$", provider, re.MULTILINE)


@pytest.mark.parametrize("q", ALL_QUERIES, ids=lambda q: q.id)
def test_every_query_returns_data(influx: InfluxServer, fleet: Fleet, q: Query) -> None:
    """Each query, with every way Grafana fills its variables, answers without error and
    with data (the fleet above has something for every panel under every selection)."""
    for scenario, form in (("all", "relative"), ("several", "absolute"), ("one", "absolute")):
        series = run(influx, render(q.query, SCENARIOS[scenario], form))
        assert series, f"{scenario} ({form}): no series from\n{render(q.query, {}, form)}"
        if q.result_format == "table" or q.kind == "annotation":
            assert rows(series), f"{scenario}: no rows"


# -- the right numbers in the panels an operator acts on --------------------------------------
def test_error_rate_per_service(influx: InfluxServer, fleet: Fleet) -> None:
    got = {
        r["service"]: r["error %"]
        for r in panel_rows(influx, "fleet-overview", "Which services fail most in this range?")
    }
    # payments: 1 failed call in 10; orders: 1 in 20 (orders-1 none, orders-2 one)
    assert got == pytest.approx({"payments": 10.0, "orders": 5.0})
    overall = panel_rows(influx, "fleet-overview", "What share of the fleet's calls fail?")
    assert overall[0]["error %"] == pytest.approx(100 * 2 / 30)


def test_request_rate_and_error_rate_over_time_add_up(influx: InfluxServer, fleet: Fleet) -> None:
    """Rate x interval gives back every call written, and error % weighted by calls gives
    back the service's error rate: the $__interval arithmetic is right."""
    seconds = int(INTERVAL.removesuffix("s"))
    rate = panel_rows(
        influx, "fleet-overview", "How many requests per second does each service get?"
    )
    calls: dict[tuple[str, int], float] = {
        (r["service"], r["time"]): r["req/s"] * seconds for r in rate
    }
    for service in ("orders", "payments"):
        written = sum(n for iid, (n, _) in fleet.calls.items() if SERVICE_OF[iid] == service)
        assert sum(v for (s, _), v in calls.items() if s == service) == pytest.approx(written)
    errors = panel_rows(influx, "fleet-overview", "Which services are failing?")
    failed = sum(r["error %"] / 100 * calls[r["service"], r["time"]] for r in errors)
    assert failed == pytest.approx(2)


def test_latency_percentiles(influx: InfluxServer, fleet: Fleet) -> None:
    p99 = {
        r["service"]: r["p99"]
        for r in panel_rows(
            influx, "fleet-overview", "Which services are slowest in this range? (p99)"
        )
    }
    assert p99 == {"orders": 690.0, "payments": 100.0}  # orders-2 is the slow one: red
    table = panel_rows(influx, "service", "How does each instance compare over this range?")
    by_instance = {r["instance"]: (r["calls"], r["error %"], r["p50"], r["p99"]) for r in table}
    assert by_instance == {
        "orders-1": (10, 0.0, 24.0, 29.0),
        "orders-2": (10, pytest.approx(10.0), 640.0, 690.0),
        "payments-1": (10, pytest.approx(10.0), 50.0, 100.0),
    }


def test_instances_heartbeating_and_in_flight(influx: InfluxServer, fleet: Fleet) -> None:
    now = {
        r["service"]: r["instances"]
        for r in panel_rows(
            influx,
            "fleet-overview",
            "How many instances of each service are heartbeating right now?",
        )
    }
    assert now == {"orders": 1, "payments": 1}  # orders-2 went silent
    last_seen = panel_rows(influx, "fleet-overview", "When did each instance last heartbeat?")
    assert {r["instance"] for r in last_seen} == set(SERVICE_OF)
    silent = min(last_seen, key=lambda r: r["time"])
    assert silent["instance"] == "orders-2"
    assert time.time() - silent["time"] / 1000 > DIED_S
    flight = panel_rows(influx, "fleet-overview", "How many requests are in flight per service?")
    last = {r["service"]: r["in flight"] for r in sorted(flight, key=lambda r: r["time"])}
    assert last == {"orders": INFLIGHT["orders-1"], "payments": INFLIGHT["payments-1"]}
    alive = panel_rows(influx, "service", "How many requests is $service working on right now?")
    assert alive[0]["in flight"] == INFLIGHT["orders-1"] + INFLIGHT["payments-1"]


def test_picks_add_up_to_what_the_balancer_counted(influx: InfluxServer, fleet: Fleet) -> None:
    table = panel_rows(influx, "balancer", "Do the picks follow the weights?")
    got = {r["instance"]: (r["picks"], r["weight"]) for r in table}
    want = {
        iid: (sum(n for (i, _), n in fleet.picks.items() if i == iid), fleet.weights[iid])
        for iid in SERVICE_OF
    }
    assert got == want
    pie = panel_rows(influx, "balancer", "What share of the picks does each instance get?")
    assert sum(r["picks"] for r in pie) == sum(fleet.picks.values())
    seconds = int(INTERVAL.removesuffix("s"))
    over_time = panel_rows(
        influx, "balancer", "Which instances does the balancer pick, and by which strategy?"
    )
    per_strategy: dict[tuple[str, str], float] = {}
    for r in over_time:
        key = (r["instance"], r["strategy"])
        per_strategy[key] = per_strategy.get(key, 0) + r["picks/s"] * seconds
    assert per_strategy == pytest.approx(fleet.picks)
    strategies = panel_rows(
        influx, "balancer", "Which strategies answer the picks?", scenario="one"
    )  # orders, weighted only
    weighted = sum(n for (i, s), n in fleet.picks.items() if s == "weighted" and i != "payments-1")
    assert sum(r["picks/s"] * seconds for r in strategies) == pytest.approx(weighted)


def test_config_changes_and_registry_events_tables(influx: InfluxServer, fleet: Fleet) -> None:
    changes = panel_rows(influx, "governance", "Who changed which service's config, and why?")
    got = [(r["service"], r["kind"], r["revision"], r["actor"], r["reason"]) for r in changes]
    assert got == [  # newest first
        ("payments", "rollback", 2, "carol", "threshold too high"),
        ("orders", "change", 2, "bob", "even out"),
        ("payments", "change", 1, "ann", "protect"),
        ("orders", "change", 1, "ann", "initial weights"),
    ]
    assert "strategy=round_robin" in changes[1]["change"]
    only_orders = panel_rows(
        influx, "governance", "Who changed which service's config, and why?", scenario="one"
    )
    assert {r["actor"] for r in only_orders} == {"ann", "bob"}
    events = panel_rows(influx, "governance", "Which instances came, went or changed?")
    assert [(r["kind"], r["instance"]) for r in events][:2] == [
        ("expired", "orders-2"),
        ("unhealthy", "orders-2"),
    ]


def test_annotations_carry_text_and_tags(influx: InfluxServer, fleet: Fleet) -> None:
    board = load(GRAFANA / "dashboards" / "service.json")
    by_name = {a["name"]: a for a in board["annotations"]["list"] if not a.get("builtIn")}
    config = by_name["Config changes (governor)"]
    got = rows(run(influx, render(config["query"], SCENARIOS["one"])))
    assert {r["actor"] for r in got} == {"ann", "bob"}  # only orders, as $service says
    assert all(config["textColumn"] in r for r in got)
    assert any("by bob: strategy=round_robin" in r["text"] for r in got)
    health = by_name["Instance health (registry)"]
    texts = {r["text"] for r in rows(run(influx, render(health["query"], SCENARIOS["all"])))}
    assert {"orders-2 unhealthy", "orders-2 expired", "payments-1 registered"} <= texts


def test_ejections_table_and_annotation(influx: InfluxServer, fleet: Fleet) -> None:
    table = panel_rows(
        influx, "service", "Which instances did the balancer eject, and why?", scenario="one"
    )
    got = [(r["kind"], r["instance"], r["ejections"], r["reason"]) for r in table]
    assert got == [  # newest first, orders only
        ("returned", "orders-2", 1, "ejection time over"),
        ("ejected", "orders-2", 1, "consecutive_failures: 5 failed calls in a row"),
    ]
    ejected = table[1]
    assert ejected["until"] - ejected["time"] == pytest.approx(30_000, abs=1)  # ms
    board = load(GRAFANA / "dashboards" / "service.json")
    (anno,) = [a for a in board["annotations"]["list"] if a["name"] == "Ejections (balancer)"]
    texts = [r["text"] for r in rows(run(influx, render(anno["query"], SCENARIOS["all"])))]
    assert len(texts) == 3
    assert any(t.startswith("orders-2 ejected until ") for t in texts)
    assert "orders-2 returned" in texts


def test_check_panels_show_failures_and_transitions(influx: InfluxServer, fleet: Fleet) -> None:
    table = panel_rows(
        influx, "service", "Which checks changed status, and what did they say?", scenario="one"
    )
    got = [(r["instance"], r["check"], r["previous"], r["kind"]) for r in table]
    assert got == [  # newest first
        ("orders-1", "http", "critical", "passing"),
        ("orders-1", "http", "passing", "critical"),
    ]
    assert table[1]["output"].endswith(": 503")
    codes = panel_rows(
        influx, "service", "Which checks fail? (0 passing, 1 warning, 2 critical)", scenario="one"
    )
    assert {(r["instance"], r["check"]) for r in codes} == {("orders-1", "http")}
    assert {r["max"] for r in codes} == {0, 2}  # passing, and critical for a while
    assert sum(r["max"] == 2 for r in codes) >= 1


def test_collector_health(influx: InfluxServer, fleet: Fleet) -> None:
    rates = panel_rows(influx, "governance", "Is the collector keeping up? (points per second)")
    assert rates
    assert {r["written"] for r in rates} == {10.0}  # 100 points per 10 s
    assert {r["received"] for r in rates} == {10.0}
    lost = panel_rows(influx, "governance", "Did the collector lose points in this range?")
    assert [(r["node"], r["dropped"], r["rejected"]) for r in lost] == [("c0ffee01", 0, 1)]
    buffered = panel_rows(influx, "governance", "How many points wait in the collector's buffer?")
    assert [r["buffered"] for r in buffered] == [42]
    alive = panel_rows(influx, "governance", "How many collectors are reporting right now?")
    assert alive[0]["collectors"] == 1


def test_variables_list_what_was_written(influx: InfluxServer, fleet: Fleet) -> None:
    def values(name: str, variable: str, scenario: str = "all") -> set[str]:
        board = load(GRAFANA / "dashboards" / f"{name}.json")
        (v,) = [v for v in board["templating"]["list"] if v["name"] == variable]
        return {r["value"] for r in rows(run(influx, render(v["query"], SCENARIOS[scenario])))}

    assert values("service", "service") == {"orders", "payments"}
    assert values("service", "instance") == set(SERVICE_OF)
    assert values("service", "instance", "one") == {"orders-1", "orders-2"}
    assert values("balancer", "strategy") == {"round_robin", "weighted"}
    assert values("balancer", "strategy", "one") == {"round_robin", "weighted"}
    assert values("governance", "service") == {"orders", "payments"}
