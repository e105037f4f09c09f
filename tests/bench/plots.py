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


def resolve(data: dict[str, Any]) -> plt.Figure:
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


PLOTS: dict[str, Callable[[dict[str, Any]], plt.Figure]] = {
    "resolve": resolve,
}
