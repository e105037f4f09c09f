"""The balancer's sync: where a registry event stands against its view (gap detection).

services/balancer/sync.py `order`: the view has applied `seq` of the registry `epoch`.
"""

from __future__ import annotations

import pytest

from services.view.sync import order


@pytest.mark.parametrize(
    ("seq", "event_seq", "expected"),
    [
        (0, 1, "next"),  # the first event after an empty snapshot
        (41, 42, "next"),
        (42, 42, "stale"),  # a duplicate (NATS redelivered nothing, but a snapshot showed it)
        (42, 7, "stale"),  # older than what the view shows
        (42, 44, "gap"),  # 43 was lost: read a snapshot
        (0, 5, "gap"),
    ],
)
def test_within_one_epoch(seq: int, event_seq: int, expected: str) -> None:
    assert order("e1", seq, "e1", event_seq) == expected


@pytest.mark.parametrize("event_seq", [1, 42, 43, 1000])
def test_a_new_epoch_is_a_restart_whatever_its_seq(event_seq: int) -> None:
    # a restarted registry counts from 1 again: even seq + 1 is not "next" of the old one
    assert order("e1", 42, "e2", event_seq) == "restarted"


def test_before_any_snapshot_every_event_is_news_from_an_unknown_registry() -> None:
    assert order("", 0, "e1", 1) == "restarted"
