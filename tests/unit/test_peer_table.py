"""The peers table's logic (tests/bench/peer_table.py): Baton against the best peer of
each line, whichever way the line counts, and the table kept inside a page of prose."""

from __future__ import annotations

import math

from peer_table import BEGIN, END, Figure, advantage, best_peer, markdown, ratio, rows, splice

NAN = math.nan


def line(*, higher: bool, **values: float) -> Figure:
    return Figure(measure="m", unit="ms", higher_is_better=higher, values=values)


def test_a_time_is_compared_with_the_fastest_peer() -> None:
    t = line(higher=False, Baton=2.0, etcd=4.0, ZooKeeper=8.0)
    assert best_peer(t) == ("etcd", 4.0)
    assert ratio(t) == 0.5
    assert advantage(t) == 2.0  # Baton twice as fast as the best peer
    [row] = rows([t])
    assert (row.baseline, row.base, row.target, row.met) == ("best peer, etcd", 4.0, "<= 1x", True)


def test_a_rate_is_compared_with_the_highest_peer_and_a_shortfall_is_missed() -> None:
    r = line(higher=True, Baton=900.0, etcd=1000.0, ZooKeeper=300.0)
    assert best_peer(r) == ("etcd", 1000.0)
    assert ratio(r) == 0.9
    [row] = rows([r])
    assert (row.target, row.met) == (">= 1x", False)


def test_peers_without_a_figure_are_left_out_and_a_line_with_none_has_no_row() -> None:
    partial = line(higher=False, Baton=1.0, etcd=NAN, Envoy=2.0)
    assert best_peer(partial) == ("Envoy", 2.0)
    alone = line(higher=False, Baton=1.0)
    assert best_peer(alone) is None
    assert ratio(alone) is None
    assert rows([alone]) == []


def test_the_markdown_table_has_a_column_per_system_and_blanks_where_none_ran() -> None:
    table = markdown(
        [line(higher=False, Baton=1.5, etcd=3.0), line(higher=True, Baton=1.0, Envoy=2.0)],
        ["Baton", "etcd", "Envoy"],
    )
    assert table[0] == "| measure | Baton | etcd | Envoy | Baton / best peer | target |  |"
    assert table[2] == "| m | 1.5 ms | 3 ms |  | 0.50x | <= 1x | met |"
    assert table[3] == "| m | 1 ms |  | 2 ms | 0.50x | >= 1x | MISSED |"


def test_splice_replaces_only_the_table_between_the_markers() -> None:
    page = f"# Peers\n\nprose before\n\n{BEGIN}\nold table\n{END}\n\nprose after\n"
    out = splice(page, ["| new |"])
    assert out == f"# Peers\n\nprose before\n\n{BEGIN}\n| new |\n{END}\n\nprose after\n"
    assert splice(out, ["| newer |"]).count(BEGIN) == 1


def test_splice_appends_the_table_to_a_page_without_markers() -> None:
    assert splice("# Peers\n", ["| t |"]) == f"# Peers\n\n{BEGIN}\n| t |\n{END}\n"
