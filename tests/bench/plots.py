"""PNG plots from the benchmarks' own data (the `data` each report carries).

One function per benchmark that has something a picture says better than the table;
a benchmark without data, or without a plot here, is simply not drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib as mpl

mpl.use("Agg")  # no screen on these machines
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from harness import Report
    from matplotlib.figure import Figure

__all__ = ["draw"]


def draw(reports: list[Report], out: Path) -> list[Path]:
    drawn = []
    for report in reports:
        plot = PLOTS.get(report.bench)
        if plot is not None and report.data:
            path = out / f"{report.bench}.png"
            fig = plot(report.data)
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            drawn.append(path)
    return drawn


def resolve(data: dict[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    clients = [str(c) for c in data["clients"]]
    x = range(len(clients))
    width = 0.27
    for i, (key, label) in enumerate(
        (("throughput", "throughput"), ("p50", "p50 latency"), ("p99", "p99 latency"))
    ):
        ax.bar([v + (i - 1) * width for v in x], data[key], width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(0.8, color="tab:red", linewidth=0.8, linestyle="--", label="throughput target")
    ax.set_xticks(list(x), clients)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("Baton / bare responder")
    ax.set_title("Resolve against a bare nats-py responder (same run)")
    ax.legend(fontsize="small", ncols=2)
    return fig


def sim(data: dict[str, Any]) -> Figure:
    """Latency at each quantile, per strategy: where the tail leaves the backends' own."""
    sc = data["scenario"]
    fig, (ax, ok) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=[3, 2])
    for name, figures in data["strategies"].items():
        qs = figures["quantiles"]
        xs = [float(q) for q in qs]
        style = {"linestyle": ":", "color": "black"} if name == "oracle" else {}
        ax.plot(range(len(xs)), list(qs.values()), marker="o", markersize=3, label=name, **style)
        ok.plot([100 * v for v in figures["per_second_success"]], linewidth=1, label=name, **style)
    ax.set_xticks(range(len(xs)), [f"p{100 * q:g}" for q in xs], rotation=30)
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (failures count as the 1 s timeout)")
    ax.set_title(
        f"{sc['backends']} backends, median {sc['median_ms']:g} ms, {sc['rate']:g} req/s; "
        f"one {sc['slow_factor']:g}x slower for {sc['slow_until'] - sc['slow_from']:g} s",
        fontsize="medium",
    )
    ax.legend(fontsize="small")
    ok.axvspan(sc["slow_from"], sc["slow_until"], color="tab:red", alpha=0.1)
    ok.set_xlabel("simulated second")
    ok.set_ylabel("success under 1 s, %")
    ok.set_title("success per second (slow window shaded)", fontsize="medium")
    return fig


def slow_e2e(data: dict[str, Any]) -> Figure:
    st = data["settings"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    names = list(data["strategies"])
    keys = (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        values = [data["strategies"][n]["all"][key] for n in names]
        ax.bar([x + (i - 1) * width for x in range(len(names))], values, width, label=label)
    ax.axhline(st["timeout_ms"], color="tab:red", linewidth=0.8, linestyle="--", label="timeout")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("latency, ms")
    ax.set_title(
        f"On NATS with {st['backends']} HTTP backends, one {st['slow_factor']:g}x slower "
        f"for a third of each phase",
        fontsize="medium",
    )
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    return fig


def scale(data: dict[str, Any]) -> Figure:
    sizes = data["sizes"]
    labels = [f"{s['instances']:,}" for s in sizes]
    fig, (mem, rate) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = range(len(sizes))
    counts = [s["instances"] for s in sizes]
    for who in ("registry", "balancer"):
        per = [s[f"{who}_b_per_instance"] for s in sizes]  # (RSS - RSS when empty) / count
        shown = [(n, p * n / 2**20) for p, n in zip(per, counts, strict=True) if p > 0]
        mem.plot(
            [n for n, _ in shown],
            [mib for _, mib in shown],  # RSS moves in pages: a small fleet may show none
            marker="o",
            label=f"{who}: {per[-1]:.0f} B per instance at {counts[-1]:,}",
        )
    mem.plot(
        counts,
        [n * 1024 / 2**20 for n in counts],
        color="tab:red",
        linewidth=0.8,
        linestyle="--",
        label="1 KB per instance (target)",
    )
    mem.set_xscale("log")
    mem.set_yscale("log")
    mem.set_xlabel("instances")
    mem.set_ylabel("RSS above an empty worker, MiB")
    mem.legend(fontsize="small")
    base = sizes[0]["resolve_s"]
    rate.bar(list(x), [s.get("resolve_vs_smallest", s["resolve_s"] / base) for s in sizes], 0.5)
    rate.axhline(0.9, color="tab:red", linewidth=0.8, linestyle="--", label="0.9x target")
    rate.set_xticks(list(x), labels)
    rate.set_xlabel("instances")
    rate.set_ylabel(f"resolve/s against at {labels[0]}")
    rate.legend(fontsize="small")
    return fig


def failover(data: dict[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for ttl in sorted({t["ttl_s"] for t in data["trials"]}):
        mine = [t for t in data["trials"] if t["ttl_s"] == ttl]
        ax.scatter(
            [t["killed_after_beat_s"] for t in mine],
            [t["ratio"] for t in mine],
            label=f"ttl_s = {ttl:g}",
        )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("killed this long after its last heartbeat, s")
    ax.set_ylabel("last resolve naming it, in ttl_s after last heartbeat")
    ax.set_title("A SIGKILLed instance: how long it is still handed out", fontsize="medium")
    ax.legend(fontsize="small")
    return fig


def config(data: dict[str, Any]) -> Figure:
    delays = sorted(data["delays_ms"])
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.plot(delays, [(i + 1) / len(delays) for i in range(len(delays))])
    ax.axvline(
        data["rtt_p50_ms"],
        color="tab:red",
        linewidth=0.8,
        linestyle="--",
        label="one resolve round trip (p50)",
    )
    ax.set_xlabel("ms from a change's acknowledgement to the first resolve obeying it")
    ax.set_ylabel("share of changes")
    ax.set_title("Config propagation", fontsize="medium")
    ax.legend(fontsize="small")
    return fig


def peers(data: dict[str, Any]) -> Figure:
    """Per line, how far Baton is ahead of the best peer (> 1) or behind it (< 1)."""
    import msgspec  # noqa: PLC0415
    import peer_table  # noqa: PLC0415

    lines = [msgspec.convert(line, peer_table.Figure) for line in data["lines"]]
    shown = [(line, a) for line in lines if (a := peer_table.advantage(line)) is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.2))
    names = [
        f"{line.measure} (vs {best[0]})" if (best := peer_table.best_peer(line)) else line.measure
        for line, _ in shown
    ]
    values = [a for _, a in shown]
    colors = ["tab:green" if a >= 1 else "tab:red" for a in values]
    y = range(len(shown))
    ax.barh(list(y), [v - 1 for v in values], left=1, color=colors)  # from even, either way
    for i, v in enumerate(values):
        ax.annotate(f"{v:.2f}x", (v, i), xytext=(3, 0), textcoords="offset points", va="center")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(list(y), names, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("Baton's lead over the best peer (> 1: ahead; best/Baton for times and sizes)")
    ax.set_title("Baton beside etcd, ZooKeeper and Envoy (same machine, same run)")
    return fig


PLOTS: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "resolve": resolve,
    "sim": sim,
    "slow_e2e": slow_e2e,
    "scale": scale,
    "failover": failover,
    "config": config,
    "peers": peers,
}
