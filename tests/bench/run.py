"""`just bench`: every benchmark, one after another, then one table of ratios.

Each benchmark is a script of its own (run alone, it prints its detail); here each runs
as a subprocess with BATON_BENCH_OUT pointing at a file for its summary rows. Every
figure is a ratio against a baseline measured in the same run on the same machine,
because these machines are shared and noisy. The table, the machine it ran on, the raw
data and the plots are written to --out (docs/bench by default), which the README shows.

    just bench [--quick] [--only resolve,sim [--keep]] [--out docs/bench]

(`just bench` puts the tests' helpers on PYTHONPATH; by hand, see harness.BENCH_PYTHONPATH.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
from harness import BENCH_PYTHONPATH, ROOT, Report, Row, figure

# name -> script; the order is the table's
BENCHES = {
    "resolve": "bench_resolve.py",
    "ingest": "bench_ingest.py",
    "collector": "bench_collector.py",
    "reports": "bench_reports.py",
    "scale": "bench_scale.py",
    "failover": "bench_failover.py",
    "replicas": "bench_replicas.py",
    "storm": "bench_storm.py",
    "cluster_failover": "bench_cluster_failover.py",
    "config": "bench_config.py",
    "history": "bench_history.py",
    "kv": "bench_kv.py",
    "sim": "sim_balancing.py",
    "slow_e2e": "bench_slow_e2e.py",
    "dns": "bench_dns.py",
    "ejection_dns": "bench_ejection_dns.py",
    "http": "bench_http.py",
    "failing_e2e": "bench_failing_e2e.py",
    "prober": "bench_prober.py",
    "peers": "bench_peers.py",
    "console": "bench_console.py",
}


class Machine(msgspec.Struct, kw_only=True):
    when: str
    cpu: str
    cores: int
    memory_gib: float
    python: str
    nats_server: str
    influxd: str
    kernel: str


class Results(msgspec.Struct, kw_only=True):
    machine: Machine
    quick: bool
    seconds: float
    reports: list[Report]
    failed: list[str]
    # with --keep: the benchmarks not rerun, each with the start of the run that measured it
    kept: dict[str, str] = msgspec.field(default_factory=dict)


def _version(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except OSError:
        return "not found"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine() -> Machine:
    cpu = "unknown"
    with Path("/proc/cpuinfo").open() as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with Path("/proc/meminfo").open() as info:
        for line in info:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    nats = Path(sys.executable).parent / "nats-server"
    return Machine(
        when=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=cpu,
        cores=os.cpu_count() or 0,
        memory_gib=round(mem_kib / 2**20, 1),
        python=platform.python_version(),
        nats_server=_version([str(nats), "--version"]),
        influxd=_version(["influxd", "version"]),
        kernel=platform.release(),
    )


def run_one(name: str, script: str, *, quick: bool) -> Report | None:
    """Run one benchmark script; its own output goes straight to ours."""
    with tempfile.TemporaryDirectory(prefix="baton-bench-") as tmp:
        out = Path(tmp) / "rows.json"
        env = {**os.environ, "BATON_BENCH_OUT": str(out), "PYTHONPATH": BENCH_PYTHONPATH}
        args = [sys.executable, str(ROOT / "tests/bench" / script)]
        if quick:
            args.append("--quick")
        print(f"\n== {name}: {' '.join(args[1:])}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.run(args, env=env, cwd=ROOT, check=False).returncode  # noqa: S603
        took = time.perf_counter() - t0
        if code != 0 or not out.exists():
            print(f"== {name} FAILED (exit {code}) after {took:.0f} s", flush=True)
            return None
        print(f"== {name} done in {took:.0f} s", flush=True)
        return msgspec.json.decode(out.read_bytes(), type=Report)


def _keep(saved: Path, fresh: list[Report], now: str) -> tuple[list[Report], dict[str, str]]:
    """The last results with `fresh`'s benchmarks replaced, in the table's order; and which
    were kept, with when each was measured (a rerun of a few must not pass for a full run)."""
    if not saved.exists():
        return fresh, {}
    last = msgspec.json.decode(saved.read_bytes(), type=Results)
    by_name = {r.bench: r for r in last.reports} | {r.bench: r for r in fresh}
    rerun = {r.bench for r in fresh}
    kept = {n: last.kept.get(n, last.machine.when) for n in by_name if n not in rerun}
    order = {name: i for i, name in enumerate(BENCHES)}
    return sorted(by_name.values(), key=lambda r: order.get(r.bench, len(order))), kept


def _verdict(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "MISSED"


def table(reports: list[Report]) -> list[str]:
    """The summary as a Markdown table: readable in a terminal and in the README."""
    lines = [
        "| area | measure | Baton | baseline (same run) | ratio | target | |",
        "| --- | --- | ---: | --- | ---: | --- | --- |",
    ]
    lines += [
        f"| {r.area} | {r.measure} | {figure(r.value)} {r.unit} | "
        f"{r.baseline}: {figure(r.base)} {r.unit} | {r.ratio:.2f}x | {r.target} | "
        f"{_verdict(r)} |"
        for report in reports
        for r in report.rows
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs of every benchmark")
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(BENCHES)}")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/bench")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="with --only: keep the other benchmarks' rows from --out's last results",
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--replot", action="store_true", help="only draw the plots again from --out's results"
    )
    args = parser.parse_args()
    if args.replot:
        saved = msgspec.json.decode((args.out / "results.json").read_bytes(), type=Results)
        _plot(saved.reports, args.out)
        return 0
    chosen = [n for n in args.only.split(",") if n] or list(BENCHES)
    unknown = [n for n in chosen if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; use {', '.join(BENCHES)}")

    host = machine()
    t0 = time.perf_counter()
    reports, failed = [], []
    for name in chosen:
        report = run_one(name, BENCHES[name], quick=args.quick)
        if report is None:
            failed.append(name)
        else:
            reports.append(report)
    kept: dict[str, str] = {}
    if args.keep:
        reports, kept = _keep(args.out / "results.json", reports, host.when)
    results = Results(
        machine=host,
        quick=args.quick,
        seconds=round(time.perf_counter() - t0, 1),
        reports=reports,
        failed=failed,
        kept=kept,
    )

    lines = table(reports)
    about = (
        f"{host.when}; {host.cpu}, {host.cores} cores, {host.memory_gib} GiB; "
        f"Python {host.python}; {host.nats_server}; {host.influxd}; "
        f"{'quick' if args.quick else 'full'} run, {results.seconds:.0f} s"
    )
    for when in sorted(set(kept.values())):
        names = ", ".join(n for n, w in kept.items() if w == when)
        about += f"; kept from the run of {when}: {names}"
    print("\n" + about)
    print("\n".join(lines))
    targets = [r for rep in reports for r in rep.rows if r.met is not None]
    met = sum(bool(r.met) for r in targets)
    print(
        f"\n{met} of {len(targets)} targets met"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_bytes(msgspec.json.format(msgspec.json.encode(results)))
    (args.out / "results.md").write_text(about + "\n\n" + "\n".join(lines) + "\n")
    _peers_page(reports, args.out, about)
    if not args.no_plots:
        _plot(reports, args.out)
    return 1 if failed else 0


def _peers_page(reports: list[Report], out: Path, about: str) -> None:
    """The peers table into --out's peers.md, between its markers (the rest is prose)."""
    import peer_table  # noqa: PLC0415  # only when the peers ran

    peers = next((r for r in reports if r.bench == "peers" and r.data), None)
    if peers is None:
        return
    lines = [msgspec.convert(line, peer_table.Figure) for line in peers.data["lines"]]
    table = [about, "", *peer_table.markdown(lines, peers.data["settings"]["systems"])]
    page = out / "peers.md"
    page.write_text(peer_table.splice(page.read_text() if page.exists() else "", table))


def _plot(reports: list[Report], out: Path) -> None:
    import plots  # noqa: PLC0415  # matplotlib only where plots are wanted

    for path in plots.draw(reports, out):
        print(f"plot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    sys.exit(main())
