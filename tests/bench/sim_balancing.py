"""Balancing quality: the real strategy code against one instance gone 20x slower.

After Linkerd's "Beyond Round Robin" (2016): 11 backends whose latency has a median of
167 ms and a standard deviation of 5 ms, 1,000 requests/s arriving at random (Poisson,
open loop), a one-minute run in which one backend is 20x slower from 15 s to 45 s
(Linkerd fixed it at 2 s, 12x); clients give up after 1 s.

No NATS and no sockets: a discrete-event simulation on a virtual clock drives the
balancer's own `Pool` (members, load index, strategies, ring) exactly as the worker does:
`pool.pick`, then `member.picked`; each call's report does `member.observe` (a failed
call counts at least `failure_penalty_ms`, as the worker's) and `member.closed`; every
backend heartbeats its true in-flight count every `ttl_s / 3` = 5 s, as the SDK does.

Model, stated so it can be argued with:
- a backend serves every request at once (no queue): latency is its own draw from a
  lognormal with median 167 ms and sigma 0.03 (standard deviation 5 ms, Linkerd's; p99
  179 ms), times 20 on the slow backend while its window is open (a draw is fixed when
  the request starts); `--sigmas` reruns round_robin, least_response_time and the
  oracle at wider spreads, where the backends' own tail sets the p99 of any strategy;
- a request not answered within the 1 s timeout fails; its latency counts as 1 s in the
  percentiles (the client waited that long) and its report says ok=false at 1,000 ms;
  the backend still serves it to the end (it stays in that backend's in-flight count);
- a pick that finds no instance (most_connections at capacity) fails at once; it counts
  as 1 s too, so percentiles never flatter a strategy that refuses work;
- consistent_hash takes a key per request, drawn from 10,000 users;
- backends have no queue, so most_connections' packing costs nothing here, and its
  figure depends on whether the slow backend is among those it packs: read it as such.

Rows: per strategy p50, p99, p99.9 and success; the target row is least_response_time's
p99 against round_robin's (target <= 0.3x). `--sigma` and `--slow` change the model.
This scenario runs without outlier ejection (as the figures before it), so it measures
the strategies alone.

A second scenario, a fast-failing instance (a bad deploy): from `fail_from` one backend
answers half its calls with an error in 1 ms (the other half as usual). Each strategy
runs with outlier ejection on (the service defaults: 5 consecutive failures, success
rate, probation, 10 s sweeps, 30 s base ejection, 10 % cap) and off; the ejection runs the
balancer's own rules (services/balancer/outliers.py) and pool, on the virtual clock, as
one replica's would (replicas agreeing is the integration tests' business). Target:
every strategy >= 99.9 % success with ejection, where round_robin without it loses
about its share (1/11 of the calls, half of them failing: 4.5 %). The failing backend's
draws are one seed's coin flips, and how soon five failures come in a row is a matter of
luck: `--fail-seeds N` reruns the scenario at the defaults with seeds 1..N and prints each
strategy's worst and mean success and how many seeds met the target.

    python tests/bench/sim_balancing.py [--quick] [--sigma 0.03] [--slow 20] [--seed 1]
        [--fail-seeds 10] [--only-failing]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from builders import instance
from harness import Row, emit

from schemas.balancer import STRATEGIES, OutlierState
from schemas.governor import OutlierConfig
from services.balancer import outliers
from services.balancer.pool import Pool
from services.balancer.worker import BalancerSettings
from services.errors import Unavailable

BACKENDS = 11
MEDIAN_MS = 167.0
RATE = 1000.0  # requests per second
TIMEOUT_MS = 1000.0
HEARTBEAT_S = 5.0  # the SDK's ttl_s / 3 at the default ttl_s of 15
USERS = 10_000
QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999)
_EMPTY: frozenset[str] = frozenset()
# Not a strategy: round robin that skips the slow backend while it is slow, as no real
# balancer could know at once. Its p99 is the best any strategy can reach.
ORACLE = "oracle"


@dataclass(frozen=True)
class Scenario:
    seconds: float = 60.0  # Linkerd's: one minute, slow from 15 s for 30 s
    slow_from: float = 15.0
    slow_for: float = 30.0
    slow_factor: float = 20.0
    sigma: float = 0.03  # Linkerd's backends: median 167 ms, standard deviation 5 ms
    seed: int = 1
    # the fast-failing backend: this share of its calls fail in fail_ms, from fail_from
    fail_share: float = 0.0
    fail_ms: float = 1.0
    fail_from: float = 15.0
    ejection: OutlierConfig | None = None  # None: outlier ejection off

    @property
    def slow_until(self) -> float:
        return self.slow_from + self.slow_for


@dataclass
class Outcome:
    strategy: str
    latencies: list[float] = field(default_factory=list)  # ms; failures at the timeout
    ok: int = 0
    failed: int = 0
    refused: int = 0  # no instance could be picked
    in_window: int = 0  # requests that arrived while the slow backend was slow
    to_slow: int = 0  # ... and were sent to it
    per_second: list[list[int]] = field(default_factory=list)  # [ok, failed] per second
    ejections: list[tuple[float, float, str]] = field(default_factory=list)  # at, until, why
    to_failing: int = 0  # calls sent to the failing backend once it fails


class Ejector:
    """One balancer replica's ejections, on the virtual clock: the worker's rules, no I/O."""

    def __init__(self, pool: Pool, config: OutlierConfig, out: Outcome) -> None:
        self.pool = pool
        self.config = config
        self.out = out
        self.state = OutlierState()

    def eject(self, iid: str, reason: str, now: float) -> float | None:
        """Eject `iid` if the rules allow; the ejection's end, to schedule its return."""
        done = outliers.eject(
            self.state,
            iid,
            reason=reason,
            now=now,
            config=self.config,
            instances=len(self.pool.members),
        )
        if done.state is not None:
            self.state = done.state
        self.apply(now)
        if done.ejection is None:
            return None
        self.out.ejections.append((now, done.ejection.until, reason))
        return done.ejection.until

    def sweep(self, now: float) -> list[float]:
        """The interval's success-rate rule; the ends of the ejections it made."""
        calls = {m.id: (m.oks, m.calls) for m in self.pool.members.values() if not m.ejected}
        for m in self.pool.members.values():
            m.calls = m.oks = 0
        ends = []
        if self.config.success_rate:
            for iid, reason in outliers.success_rate_outliers(calls):
                until = self.eject(iid, reason, now)
                if until is not None:
                    ends.append(until)
        return ends

    def returns(self, now: float) -> None:
        back = outliers.due(self.state, now)
        if back:
            self.state = outliers.release(
                self.state, back, now=now, interval_s=self.config.interval_s
            )
        self.apply(now)

    def apply(self, now: float) -> None:
        held = outliers.held(self.state, now, self.config.interval_s)
        self.pool.set_ejected(outliers.active(self.state, now), held=held)


def simulate(strategy: str, sc: Scenario) -> Outcome:  # noqa: C901, PLR0912, PLR0915  # one event loop
    rng = random.Random(sc.seed)  # the same arrivals and draws for every strategy
    now = 0.0
    real = strategy if strategy != ORACLE else "round_robin"
    pool = Pool("sim", strategy=real, rng=random.Random(sc.seed + 1), wallclock=lambda: now)
    members = [pool.upsert(instance(f"b{i:02d}")) for i in range(BACKENDS)]
    slow = members[0]
    penalty = BalancerSettings().failure_penalty_ms
    inflight = dict.fromkeys(members, 0)  # what each backend is really serving
    out = Outcome(strategy, per_second=[[0, 0] for _ in range(math.ceil(sc.seconds))])
    mu = math.log(MEDIAN_MS)

    # each event: its time, a sequence number (ties), kind, member, pick token, latency,
    # and for a report whether the call succeeded
    events: list[tuple[float, int, int, Any, str, float, bool]] = []
    seq = 0
    arrive, report, done, beat, sweep, back = 0, 1, 2, 3, 4, 5
    heapq.heappush(events, (rng.expovariate(RATE), seq, arrive, None, "", 0.0, True))
    for i, m in enumerate(members):  # staggered, as independent processes would be
        seq += 1
        heapq.heappush(events, (HEARTBEAT_S * (i + 1) / BACKENDS, seq, beat, m, "", 0.0, True))
    cfg = sc.ejection
    ejector = Ejector(pool, cfg, out) if cfg is not None else None
    if cfg is not None:
        seq += 1
        heapq.heappush(events, (cfg.interval_s, seq, sweep, None, "", 0.0, True))
    failing = members[0]
    fail_rng = random.Random(sc.seed + 2)  # its own draws: arrivals stay the same
    picks = 0
    while events:
        now, _, kind, m, token, latency, call_ok = heapq.heappop(events)
        if kind == arrive:
            if now >= sc.seconds:
                continue  # no more arrivals; the rest drains
            seq += 1
            heapq.heappush(events, (now + rng.expovariate(RATE), seq, arrive, None, "", 0.0, True))
            draw = math.exp(rng.gauss(mu, sc.sigma))
            key = str(rng.randrange(USERS))
            window = sc.slow_from <= now < sc.slow_until
            out.in_window += window
            try:
                if strategy == ORACLE:  # knows which one is slow: the floor for any balancer
                    m = members[1 + picks % (BACKENDS - 1)] if window else members[picks % BACKENDS]
                else:
                    m, _, _ = pool.pick(strategy=None, key=key, zone=None, exclude=_EMPTY, now=now)
            except Unavailable:
                out.refused += 1
                out.failed += 1
                out.latencies.append(TIMEOUT_MS)
                out.per_second[int(now)][1] += 1
                continue
            picks += 1
            token = str(picks)
            m.picked(token, now)
            inflight[m] += 1
            if m is slow and window:
                draw *= sc.slow_factor
                out.to_slow += 1
            ok = draw <= TIMEOUT_MS
            if sc.fail_share and m is failing and now >= sc.fail_from:
                out.to_failing += 1
                if fail_rng.random() < sc.fail_share:  # an error, at once
                    draw, ok = sc.fail_ms, False
            waited = draw if ok or draw < TIMEOUT_MS else TIMEOUT_MS
            out.latencies.append(waited)
            out.per_second[int(now)][0 if ok else 1] += 1
            if ok:
                out.ok += 1
            else:
                out.failed += 1
            seq += 1
            heapq.heappush(events, (now + waited / 1000, seq, report, m, token, waited, ok))
            seq += 1
            heapq.heappush(events, (now + draw / 1000, seq, done, m, "", 0.0, True))
        elif kind == report:  # the client's call report, as BalancerClient sends it
            failed = not call_ok
            m.observe(max(latency, penalty) if failed else latency, now)
            m.closed(token)  # finished: as the figures before, the backend's own count
            if ejector is not None:
                started = now - latency / 1000  # as the worker dates it: report - latency
                why = outliers.counted(m, ok=call_ok, started=started, config=ejector.config)
                until = ejector.eject(m.id, why, now) if why is not None else None
                if until is not None:
                    seq += 1
                    heapq.heappush(events, (until, seq, back, None, "", 0.0, True))
        elif kind == done:
            inflight[m] -= 1
        elif kind == sweep:
            assert ejector is not None  # only scheduled with one
            for until in ejector.sweep(now):
                seq += 1
                heapq.heappush(events, (until, seq, back, None, "", 0.0, True))
            if now < sc.seconds + 2:
                seq += 1
                heapq.heappush(
                    events, (now + ejector.config.interval_s, seq, sweep, None, "", 0.0, True)
                )
        elif kind == back:
            assert ejector is not None
            ejector.returns(now)
        elif now < sc.seconds + 2:  # heartbeat, while there is traffic
            m.heartbeat(inflight[m], now)
            seq += 1
            heapq.heappush(events, (now + HEARTBEAT_S, seq, beat, m, "", 0.0, True))
    return out


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)
    return {str(q): ordered[min(n - 1, int(q * n))] for q in QUANTILES}


def main(args: argparse.Namespace) -> None:
    sc = Scenario(sigma=args.sigma, slow_factor=args.slow, seed=args.seed)
    if args.quick:
        sc = Scenario(
            seconds=40, slow_from=10, slow_for=20, sigma=args.sigma, slow_factor=args.slow
        )
    print(
        f"balancing quality: {BACKENDS} backends, median {MEDIAN_MS:g} ms (lognormal sigma "
        f"{sc.sigma:g}), {RATE:g} req/s for {sc.seconds:g} s, one backend {sc.slow_factor:g}x "
        f"slower from {sc.slow_from:g} s to {sc.slow_until:g} s, timeout {TIMEOUT_MS:g} ms"
    )
    print(
        f"{'strategy':>20} | {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} | {'success':>8} | "
        f"{'to slow in window':>17} | {'sim s':>5}"
    )
    results: dict[str, tuple[Outcome, dict[str, float]]] = {}
    for strategy in (*STRATEGIES, ORACLE):
        t0 = time.perf_counter()
        out = simulate(strategy, sc)
        q = quantiles(out.latencies)
        results[strategy] = (out, q)
        total = out.ok + out.failed
        share = out.to_slow / out.in_window if out.in_window else 0.0
        print(
            f"{strategy:>20} | {q['0.5']:>7.0f} {q['0.99']:>7.0f} {q['0.999']:>8.0f} | "
            f"{out.ok / total:>8.3%} | {share:>17.1%} | {time.perf_counter() - t0:>5.1f}"
        )

    rr = results["round_robin"][1]
    sensitivity = {}
    for sigma in args.sigmas:
        spread = Scenario(**{**sc.__dict__, "sigma": sigma})
        by = {
            s: quantiles(simulate(s, spread).latencies)["0.99"]
            for s in ("round_robin", "least_response_time", ORACLE)
        }
        sensitivity[str(sigma)] = by
        print(
            f"  sigma {sigma:g}: p99 round_robin {by['round_robin']:.0f} ms, "
            f"least_response_time {by['least_response_time']:.0f} ms "
            f"({by['least_response_time'] / by['round_robin']:.2f}x), "
            f"oracle {by[ORACLE]:.0f} ms ({by[ORACLE] / by['round_robin']:.2f}x)"
        )
    rows = []
    label = {ORACLE: "oracle (never the slow one: the floor)"}
    for strategy, (out, q) in results.items():
        lrt = strategy == "least_response_time"
        ratio = q["0.99"] / rr["0.99"]
        rows.append(
            Row(
                area="balancing (simulated)",
                measure=f"p99, {label.get(strategy, strategy)} (p50 {q['0.5']:.0f} ms, "
                f"p99.9 {q['0.999']:.0f} ms, success {out.ok / (out.ok + out.failed):.2%})",
                baseline="round_robin p99",
                value=q["0.99"],
                base=rr["0.99"],
                unit="ms",
                ratio=ratio,
                target="<= 0.3x" if lrt else "",
                met=ratio <= 0.3 if lrt else None,  # the target
            )
        )
    data = {
        "scenario": {
            "backends": BACKENDS,
            "median_ms": MEDIAN_MS,
            "sigma": sc.sigma,
            "rate": RATE,
            "seconds": sc.seconds,
            "slow_from": sc.slow_from,
            "slow_until": sc.slow_until,
            "slow_factor": sc.slow_factor,
            "timeout_ms": TIMEOUT_MS,
        },
        "sensitivity_p99_by_sigma": sensitivity,
        "strategies": {
            s: {
                "quantiles": q,
                "success": out.ok / (out.ok + out.failed),
                "share_to_slow_in_window": out.to_slow / out.in_window if out.in_window else 0,
                "refused": out.refused,
                "per_second_success": [
                    ok / (ok + bad) if ok + bad else 1.0 for ok, bad in out.per_second
                ],
            }
            for s, (out, q) in results.items()
        },
    }
    fail_rows, data["failing"] = failing(args)
    emit("sim", rows + fail_rows, data)


def main_failing(args: argparse.Namespace) -> None:
    """The fast-failing scenario alone (`--only-failing`)."""
    fail_rows, failing_data = failing(args)
    emit("sim", fail_rows, {"failing": failing_data})


# Outlier settings the fast-failing scenario runs with: the service defaults, and one
# step tighter. Fast failures report at once while the same instance's successes report
# 167 ms later, so in report order its failures come interleaved with successes: five in a
# row can take seconds (round_robin's evenly spaced calls interleave most). Once the
# instance returns, probation ejects it again at its first failure.
EJECTION: dict[str, OutlierConfig] = {
    "defaults": OutlierConfig(),
    "consecutive_failures=3": OutlierConfig(consecutive_failures=3),
}


def failing(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    """The fast-failing backend: every strategy with outlier ejection off, and on."""
    sc = Scenario(slow_factor=1.0, slow_for=0.0, fail_share=0.5, fail_from=15.0, seed=args.seed)
    if args.quick:
        sc = Scenario(seconds=40, slow_factor=1.0, slow_for=0.0, fail_share=0.5, fail_from=10.0)
    print(
        f"fast-failing backend: from {sc.fail_from:g} s one of {BACKENDS} backends fails "
        f"{sc.fail_share:.0%} of its calls in {sc.fail_ms:g} ms; {sc.seconds:g} s at {RATE:g} "
        "req/s; success without outlier ejection, and with it (ejected at s, for s)"
    )
    print(f"{'strategy':>20} | {'off':>8} | " + " | ".join(f"{k:>30}" for k in EJECTION))
    rows: list[Row] = []
    data: dict[str, Any] = {}
    for strategy in STRATEGIES:
        off = simulate(strategy, sc)
        ok_off = off.ok / (off.ok + off.failed)
        data[strategy] = {"success_off": ok_off, "to_failing_off": off.to_failing}
        cells = []
        for label, cfg in EJECTION.items():
            on = simulate(strategy, Scenario(**{**sc.__dict__, "ejection": cfg}))
            ok_on = on.ok / (on.ok + on.failed)
            when = ",".join(f"{at:.1f}/{until - at:.0f}" for at, until, _ in on.ejections)
            cells.append(f"{ok_on:>8.3%} {when:>21}")
            data[strategy][label] = {
                "success": ok_on,
                "to_failing": on.to_failing,
                "ejections": [{"at": a, "until": u, "reason": r} for a, u, r in on.ejections],
            }
            rows.append(
                Row(
                    area="outlier ejection (simulated)",
                    measure=f"success, {strategy}, fast-failing backend, ejection {label} "
                    f"(ejected {len(on.ejections)}x; without ejection {ok_off:.2%})",
                    baseline="all calls",
                    value=100 * ok_on,
                    base=100.0,
                    unit="%",
                    ratio=ok_on,
                    target=">= 0.999",
                    met=ok_on >= 0.999,  # the target
                )
            )
        print(f"{strategy:>20} | {ok_off:>8.3%} | " + " | ".join(cells))
    share = sc.fail_share / BACKENDS * (sc.seconds - sc.fail_from) / sc.seconds
    lost = 1 - data["round_robin"]["success_off"]
    rows.append(
        Row(
            area="outlier ejection (simulated)",
            measure=f"failed calls, round_robin without ejection (its share: 1/{BACKENDS} x "
            f"{sc.fail_share:.0%} of the calls after the deploy)",
            baseline="expected share",
            value=100 * lost,
            base=100 * share,
            unit="%",
            ratio=lost / share,
        )
    )
    by_seed = seeds(sc, args.fail_seeds)
    return rows, {
        "scenario": {**sc.__dict__, "ejection": None},
        "strategies": data,
        "defaults_by_seed": by_seed,
    }


def seeds(sc: Scenario, n: int) -> dict[str, list[float]]:
    """Success at the defaults for seeds 1..n, each strategy (nothing when n is 0)."""
    if n <= 0:
        return {}
    print(f"at the defaults, seeds 1..{n}: worst, mean, seeds >= 99.9 %")
    found: dict[str, list[float]] = {}
    for strategy in STRATEGIES:
        got = []
        for seed in range(1, n + 1):
            out = simulate(
                strategy, Scenario(**{**sc.__dict__, "seed": seed, "ejection": OutlierConfig()})
            )
            got.append(out.ok / (out.ok + out.failed))
        found[strategy] = got
        met = sum(ok >= 0.999 for ok in got)
        print(
            f"{strategy:>20} | {min(got):>8.3%} {sum(got) / n:>8.3%} | {met}/{n} | "
            + " ".join(f"{ok:.2%}" for ok in got)
        )
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="40 s simulated, 20 s slow")
    parser.add_argument("--sigma", type=float, default=Scenario.sigma, help="lognormal sigma")
    parser.add_argument("--slow", type=float, default=20.0, help="how much slower, x")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--sigmas",
        type=lambda v: [float(x) for x in v.split(",") if x],
        default=[0.1, 0.15, 0.2, 0.25],
        help="also report p99s at these spreads (comma-separated; empty for none)",
    )
    parser.add_argument(
        "--fail-seeds", type=int, default=0, help="rerun the fast-failing defaults, seeds 1..N"
    )
    parser.add_argument(
        "--only-failing", action="store_true", help="only the fast-failing scenario"
    )
    parsed = parser.parse_args()
    (main_failing if parsed.only_failing else main)(parsed)
