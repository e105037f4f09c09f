"""The peers table: each system's figure per line, Baton against the best peer on it.

A line is a `Figure`: what was measured, its unit, whether more is better, and each
system's value (a system that does not do that work has none). Baton's ratio is taken
against the best peer of that line, so "ahead of every peer" reads as one ratio per line:
times and sizes <= 1x, rates and success >= 1x.
"""

from __future__ import annotations

import math

import msgspec
from harness import Row, figure

__all__ = ["BATON", "Figure", "advantage", "markdown", "ratio", "rows", "splice"]

BATON = "Baton"


class Figure(msgspec.Struct, kw_only=True):
    measure: str
    unit: str
    higher_is_better: bool
    values: dict[str, float]  # system -> its figure; a peer without one is left out
    note: str = ""  # the setting each system ran at, when it differs


def _peers(line: Figure) -> dict[str, float]:
    return {name: v for name, v in line.values.items() if name != BATON and not math.isnan(v)}


def best_peer(line: Figure) -> tuple[str, float] | None:
    """The peer with the best figure on this line, or None if no peer measured it."""
    peers = _peers(line)
    if not peers:
        return None
    pick = max if line.higher_is_better else min
    name = pick(peers, key=lambda n: peers[n])
    return name, peers[name]


def ratio(line: Figure) -> float | None:
    """Baton's figure over the best peer's (None without both; inf over a zero)."""
    best = best_peer(line)
    mine = line.values.get(BATON)
    if best is None or mine is None or math.isnan(mine):
        return None
    if best[1] == 0:
        return 1.0 if mine == 0 else math.inf
    return mine / best[1]


def met(line: Figure) -> bool | None:
    r = ratio(line)
    if r is None:
        return None
    return r >= 1 if line.higher_is_better else r <= 1


def target(line: Figure) -> str:
    return ">= 1x" if line.higher_is_better else "<= 1x"


def rows(lines: list[Figure]) -> list[Row]:
    """The summary rows `just bench` prints: Baton against the best peer, one a line."""
    out = []
    for line in lines:
        best, r = best_peer(line), ratio(line)
        if best is None or r is None:
            continue
        out.append(
            Row(
                area="peers",
                measure=line.measure + (f" ({line.note})" if line.note else ""),
                baseline=f"best peer, {best[0]}",
                value=line.values[BATON],
                base=best[1],
                unit=line.unit,
                ratio=r,
                target=target(line),
                met=met(line),
            )
        )
    return out


def markdown(lines: list[Figure], systems: list[str]) -> list[str]:
    """One table, a column per system, then Baton over the best peer and the verdict."""
    head = ["measure", *systems, "Baton / best peer", "target", ""]
    out = [
        "| " + " | ".join(head) + " |",
        "| --- |" + " ---: |" * (len(systems) + 1) + " --- | --- |",
    ]
    for line in lines:
        cells = [line.measure + (f" ({line.note})" if line.note else "")]
        for name in systems:
            v = line.values.get(name)
            cells.append("" if v is None or math.isnan(v) else f"{figure(v)} {line.unit}".strip())
        r, ok = ratio(line), met(line)
        cells.append("" if r is None else f"{r:.2f}x")
        cells.append(target(line))
        cells.append("" if ok is None else ("met" if ok else "MISSED"))
        out.append("| " + " | ".join(cells) + " |")
    return out


def advantage(line: Figure) -> float | None:
    """How far Baton is ahead of the best peer, > 1 ahead and < 1 behind, whichever way
    the line counts: best/Baton for times and sizes, Baton/best for rates."""
    r = ratio(line)
    if r is None or r == 0:
        return None
    return r if line.higher_is_better else 1 / r


BEGIN, END = "<!-- peers table: tests/bench/run.py writes it -->", "<!-- end of the peers table -->"


def splice(text: str, table: list[str]) -> str:
    """`text` with what lies between the markers replaced by `table` (the rest of the
    page, written by hand, kept); the markers and the table appended if missing."""
    block = "\n".join([BEGIN, *table, END])
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    return text[:start] + block + text[end + len(END) :]
